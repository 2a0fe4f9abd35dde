"""Everything a simulation needs, built once from the config: data split across parties, the model
with its LoRA adapter, the algorithm, the protocol and its provisioned keys."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from securefed import algorithms
from securefed.aggregate import FlatLayout
from securefed.algorithms.base import Algorithm
from securefed.config import RootConfig
from securefed.errors import ConfigError
from securefed.data.partition import partition, partition_report
from securefed.models.adapter import get_adapter_state
from securefed.data.chat import render_loaded
from securefed.models.loading import attach_lora, fit_max_length, load_base
from securefed.privacy.engine import PrivacyEngine, build_engine
from securefed.protocols import registry as protocols
from securefed.protocols.base import AggregationProtocol
from securefed.simulation.evaluate import EvalSet
from securefed.simulation.steps import party_names
from securefed.training.tasks import TaskFunctions, task_functions
from securefed.training.batches import Tokenized


@dataclass
class World:
    cfg: RootConfig
    model: Any  # peft model; one copy serves every simulated party in turn
    tokenizer: Any
    device: torch.device
    layout: FlatLayout
    initial_adapter: dict[str, torch.Tensor]
    algorithm: Algorithm
    protocol: AggregationProtocol
    server_material: Any
    party_material: dict[str, Any]
    party_ids: tuple[str, ...]
    party_data: dict[str, list[Tokenized]]
    party_weights: dict[str, int]  # sample counts
    partition_report: Any
    evalset: EvalSet
    skipped_rows: int
    task: TaskFunctions  # SFT or DPO: data, batching, local training and scoring
    privacy: PrivacyEngine  # per-party DP budgets and the user-level mechanisms; 'none' passes through
    inferred_preset: str | None = None  # the data preset read from the file's columns, said on the console


def scored_split(data: Any, split: str) -> str:
    """The held-out split `split` ("auto", "test" or "eval") names for this data: "test" or "eval"."""
    return "test" if split == "test" or (split == "auto" and data.test) else "eval"


def evaluation_rows(data: Any, split: str) -> tuple:
    """The rows per-round evaluation scores: the TEST split when there is one (split "auto"), never rows
    a party trains on."""
    if scored_split(data, split) == "test":
        if not data.test:
            raise ConfigError("evaluation.split 'test' needs data.test_fraction > 0")
        return data.test
    if not data.eval:
        raise ConfigError("no evaluation examples: set data.test_fraction or data.eval_fraction > 0")
    return data.eval


def scored_sample(rows: tuple, n: int, seed: int) -> tuple:
    """At most n of the held-out rows, a seeded uniform sample kept in source order. Not the first n:
    splits keep source order and some sources are sorted (Financial PhraseBank's first TEST rows are
    79% positive against 28% overall), so a prefix would score a label-skewed subset."""
    if len(rows) <= n:
        return rows
    keep = np.sort(np.random.default_rng([seed, 0x5C0]).choice(len(rows), size=n, replace=False))
    return tuple(rows[i] for i in keep)


def build_evalset(fns: TaskFunctions, data: Any, tokenizer: Any, cfg: RootConfig, max_length: int,
                  split: str | None = None) -> EvalSet:
    """The scored rows (rendered data), tokenised and batched once."""
    examples = scored_sample(evaluation_rows(data, split or cfg.evaluation.split), cfg.evaluation.max_examples,
                             cfg.seed)
    tokenized = fns.tokenize(tokenizer, examples, max_length)
    # Rows of similar length batched together: less padding in the loss pass and in generation (the
    # scores are per row, so the order does not change them). Preference pairs keep their order.
    order = sorted(range(len(tokenized)), key=lambda i: len(getattr(tokenized[i], "input_ids", ())))
    examples, tokenized = tuple(examples[i] for i in order), [tokenized[i] for i in order]
    bs = cfg.evaluation.batch_size
    batches = tuple(fns.collate(tokenized[i : i + bs], tokenizer.pad_token_id) for i in range(0, len(tokenized), bs))
    return EvalSet(tuple(examples), batches, data.labels, scored_split(data, split or cfg.evaluation.split))


def build_world(cfg: RootConfig) -> World:
    fns = task_functions(cfg)
    data = fns.load(cfg.data, seed=cfg.seed)
    party_ids = party_names(cfg.parties)
    parts = partition(len(data.train), data.partition_keys, cfg.parties, cfg.data.partition, seed=cfg.seed)
    report = partition_report(parts, data.partition_keys)

    base, tokenizer, device = load_base(cfg.model)
    model = attach_lora(base, cfg.lora, seed=cfg.seed, gradient_checkpointing=cfg.training.gradient_checkpointing)
    initial = get_adapter_state(model)
    layout = FlatLayout.of(initial)
    data = render_loaded(data, tokenizer, cfg.data.prompt_style)  # instruct models: their chat template
    max_length = fit_max_length(base, cfg.training.max_length)

    tokenized = fns.tokenize(tokenizer, data.train, max_length)
    party_data = {pid: [tokenized[i] for i in idx] for pid, idx in zip(party_ids, parts)}
    sizes = {p: len(d) for p, d in party_data.items()}  # sample counts: weights and DP sample rates

    algorithm = algorithms.create(cfg.algorithm, cfg.parties, cfg.rounds)
    protocol = protocols.create(cfg.aggregation.protocol, cfg.aggregation.section())
    server_material, party_material = protocol.provision(party_ids)
    return World(
        cfg=cfg, model=model, tokenizer=tokenizer, device=device, layout=layout, initial_adapter=initial,
        algorithm=algorithm, protocol=protocol, server_material=server_material, party_material=party_material,
        party_ids=party_ids, party_data=party_data, party_weights=sizes,
        partition_report=report, evalset=build_evalset(fns, data, tokenizer, cfg, max_length),
        skipped_rows=data.skipped,
        task=fns,
        privacy=build_engine(cfg, party_ids, sizes, layout.size),
        inferred_preset=data.inferred_preset,
    )
