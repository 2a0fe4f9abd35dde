"""What differs between the training tasks (SFT and DPO): how data is loaded, tokenised, batched,
trained and scored. The simulation and the deployment's party both pick their functions here."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

from securefed.config import RootConfig


@dataclass(frozen=True)
class TaskFunctions:
    load: Callable[..., Any]  # (DataConfig, seed) -> LoadedData-like (train, eval, labels, partition_keys)
    tokenize: Callable[..., list]  # (tokenizer, examples, max_length) -> tokenized items
    collate: Callable[..., dict]  # (items, pad_id) -> batch
    draw: Callable[..., list]  # (items, n_batches, batch_size, rng, pad_id) -> batches
    train: Callable[..., Any]  # train_local's signature -> LocalResult
    evaluate: Callable[..., dict]  # evaluate_adapter's signature -> metrics
    dp_task: Any = None  # dp_sgd.DPTask for example-level DP-SGD; None = SFT's per-record default


def task_functions(cfg: RootConfig) -> TaskFunctions:
    if cfg.task == "dpo":
        from securefed.training import preference_batches as pb
        from securefed.training.dpo import dpo_dp_task, evaluate_preferences, train_local_dpo

        return TaskFunctions(pb.load_pairs, pb.tokenize_pairs, pb.collate_pairs, pb.draw_pair_batches,
                             functools.partial(train_local_dpo, beta=cfg.dpo.beta),
                             functools.partial(evaluate_preferences, beta=cfg.dpo.beta),
                             dpo_dp_task(cfg.dpo.beta))
    from securefed.data.loading import load_examples
    from securefed.simulation.evaluate import evaluate_adapter
    from securefed.training.batches import collate, collate_packed, draw_batches, tokenize_all
    from securefed.training.sft import train_local

    # Packing changes only how a micro-batch is laid out (same examples, same loss); evaluation batches
    # and DP-SGD's Poisson batches (per-example rows for per-example clipping) stay padded.
    draw = functools.partial(draw_batches, collate_fn=collate_packed) if cfg.training.packing else draw_batches
    return TaskFunctions(load_examples, tokenize_all, collate, draw, train_local, evaluate_adapter)
