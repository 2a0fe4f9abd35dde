"""Pieces of a round shared by the simulation and the deployment: party selection, per-round seeds,
turning a local result into a protocol input, and a protocol's sum into the algorithm's Aggregate."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from securefed.aggregate import Aggregate, FlatLayout
from securefed.algorithms.base import ClientContext, ClientState
from securefed.config import RootConfig
from securefed.membership import derive_seed, select_parties  # noqa: F401  (re-exported)
from securefed.protocols.base import PartyInput, VectorSum
from securefed.training.sft import LocalResult


def train_party(task: Any, model: Any, pad_id: int, items: Sequence[Any], cfg: RootConfig, round_index: int,
                party_id: str, lr: float, algorithm: Any, ctx: ClientContext, state: ClientState,
                device: Any) -> LocalResult:
    """One party's local round, its data order and LoRA dropout seeded by (seed, round, party): the
    same call in the simulation and in a deployed party, so both train identically."""
    tc = cfg.training
    torch.manual_seed(derive_seed(cfg.seed, "torch", round_index, party_id))
    rng = np.random.default_rng(derive_seed(cfg.seed, "batches", round_index, party_id))
    batches = task.draw(items, tc.max_steps * tc.grad_accum, tc.batch_size, rng, pad_id)
    return task.train(model, batches, tc, lr, algorithm, ctx, state, device)


def train_party_dp(task: Any, model: Any, pad_id: int, items: Sequence[Any], cfg: RootConfig, round_index: int,
                   party_id: str, lr: float, algorithm: Any, ctx: ClientContext, state: ClientState, device: Any,
                   dp: Any):
    """train_party under example-level DP-SGD (dp: training.dp_sgd.DPSGDParams): Opacus draws its own
    Poisson batches from the party's records (DPO: its pairs, clipped per pair by task.dp_task).
    Returns the DPLocalResult (the spend to account is its noise multiplier, sample rate and steps)."""
    from securefed.training.dp_sgd import train_local_dp

    torch.manual_seed(derive_seed(cfg.seed, "torch", round_index, party_id))  # LoRA dropout
    return train_local_dp(model, items, pad_id, cfg.training, lr, algorithm, ctx, state, device, dp,
                          task=task.dp_task)


def party_input(result: LocalResult, layout: FlatLayout, weight: float, clip: Any = None) -> PartyInput:
    """The flat protocol input; `clip` (securefed.robust.bounds.InputBound, from party_clip(cfg)) is
    the party's own clipping, which lets the server reject sums past it."""
    control = None if result.control_delta is None else layout.flatten(result.control_delta)
    data = PartyInput(layout.flatten(result.delta), control, float(weight))
    return data if clip is None else clip.apply(data)


def to_aggregate(vsum: VectorSum, layout: FlatLayout) -> Aggregate:
    """The only bridge from a protocol's output to the server algorithm: sums, never parts."""
    control = None if vsum.control_sum is None else layout.unflatten(vsum.control_sum)
    return Aggregate(layout.unflatten(vsum.delta_sum), control, vsum.total_weight, len(vsum.contributors))


def party_names(n: int) -> tuple[str, ...]:
    width = max(2, len(str(n - 1)))
    return tuple(f"party-{i:0{width}d}" for i in range(n))
