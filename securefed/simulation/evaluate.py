"""Per-round evaluation of an adapter: held-out loss/perplexity and, for labelled tasks, generated
answers parsed and scored (unparseable answers count as wrong and are counted)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from securefed.data.types import Example
from securefed.evaluation.metrics import accuracy, macro_f1, parse_label
from securefed.evaluation.scoring import generate
from securefed.models.adapter import set_adapter_state
from securefed.training.batches import needs_special_tokens
from securefed.training.sft import eval_loss


@dataclass(frozen=True)
class EvalSet:
    examples: tuple[Example, ...]
    batches: tuple[Mapping[str, torch.Tensor], ...]  # tokenized, for the loss
    labels: tuple[str, ...] | None  # set for labelled tasks
    split: str = "eval"  # which held-out split the rows come from: "test" or "eval"


def evaluate_adapter(
    model: Any, tokenizer: Any, params: Mapping[str, torch.Tensor], evalset: EvalSet, device: torch.device,
    batch_size: int, max_new_tokens: int,
) -> dict[str, float]:
    set_adapter_state(model, params)
    loss = eval_loss(model, evalset.batches, device)
    out = {"eval_loss": loss, "eval_ppl": math.exp(min(loss, 50.0)), "eval_rows": float(len(evalset.examples))}
    if evalset.labels:
        prompts = [e.prompt for e in evalset.examples]
        special = all(needs_special_tokens(tokenizer, p) for p in prompts)  # chat-rendered prompts hold BOS
        texts = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                         add_special_tokens=special)
        preds = [parse_label(t, evalset.labels) for t in texts]
        refs = [e.label for e in evalset.examples]
        out["accuracy"] = accuracy(preds, refs)
        out["macro_f1"] = macro_f1(preds, refs, evalset.labels)
        out["unparseable"] = sum(p is None for p in preds) / len(preds)
    return out


def mean_metrics(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Average of per-party metrics (Local: each party's own model on the common eval set)."""
    return {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
