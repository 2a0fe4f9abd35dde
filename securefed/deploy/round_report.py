"""What a deployed party reports each round besides its update, and what the server learns of it.

Each party appends a few report coordinates to the vector the protocol protects (after its DP step,
before the protocol): its mean training loss this round and, every `evaluation.every` rounds, the
held-out metrics of the global model it received (its own eval/TEST rows, never rows it trains on).
They travel inside the same masked (secagg) or encrypted (he) vector as the update, so the server
learns exactly what it learns of the update: the weighted SUM over the round's contributors,

    sum_i w_i * [train_loss_i, e_i, e_i*eval_loss_i, a_i, a_i*accuracy_i, ...]   (LAYOUT order)

(w_i: the weight the update carries; e_i, a_i: 1 for a party that reported that group this round),
and from it weighted means over the contributors, and over those that reported each group.
It never sees one party's value unless the protocol is `plain`, which shows it each party's whole
update anyway. A malicious party can spoil the reported means of a round (as it can the update),
not read anyone else's. Values are put in [0, clip] (the protocol's per-coordinate bound; losses
divided by LOSS_CAP), so the protocol's fixed point carries them at clip/2^precision_bits.

These sums are not covered by differential privacy: under a DP mechanism they are off unless
`evaluation.party_metrics = "on"` says the federation accepts that release (refused with
user-distributed DP, whose integer carrier has no room for them).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from securefed.protocols.base import PartyInput, VectorSum

# Report coordinates: the training loss, then groups of held-out fields, each led by an indicator
# (1 for a party whose held-out scoring produced that group this round), so a mean is taken over the
# parties that reported it and a true 0 is not confused with "not reported".
GROUPS = (("evaluated", ("eval_loss",)), ("labelled", ("accuracy", "macro_f1", "unparseable")),
          ("preference", ("preference_accuracy",)))
LAYOUT = ("train_loss",) + tuple(name for flag, fields in GROUPS for name in (flag, *fields))
HELDOUT_KEYS = tuple(f for _, fields in GROUPS for f in fields) + ("heldout_weight_share",)
LOSS_CAP = 32.0  # losses are reported clamped to [0, LOSS_CAP] (uniform over 49k tokens is ~10.8 nats)
_LOSSES = ("train_loss", "eval_loss")
WIDTH = len(LAYOUT)


def enabled(cfg: Any) -> bool:
    """Whether parties report metrics: "auto" is on exactly when no DP mechanism runs."""
    mode = cfg.evaluation.party_metrics
    return mode == "on" or (mode == "auto" and cfg.privacy.mechanism == "none")


def width(cfg: Any) -> int:
    """Report coordinates appended to every party's vector (0 when off)."""
    return WIDTH if enabled(cfg) else 0


def bound(cfg: Any) -> float:
    """The protocol's per-coordinate bound, which every report coordinate stays within."""
    return float(getattr(cfg.aggregation.section(), "clip", 1.0))


def sum_bound(cfg: Any) -> Any:
    """The coordinator's check on a decoded sum (securefed.robust.bounds.InputBound) for vectors that
    carry report coordinates: each is within `bound(cfg)`, so a party's update of L2 norm <= C plus its
    report has norm <= sqrt(C^2 + width * bound^2); the per-coordinate bound already covers them."""
    from securefed.robust.bounds import input_bound

    b = input_bound(cfg)
    if width(cfg) and np.isfinite(b.norm):
        b = dataclasses.replace(b, norm=float(np.hypot(b.norm, np.sqrt(width(cfg)) * bound(cfg))))
    return b


def evaluates(cfg: Any, round: int) -> bool:
    """Rounds in which parties score the global model they receive (the model after `round` rounds)."""
    return round % cfg.evaluation.every == 0


def encode(cfg: Any, train_loss: float, heldout: Mapping[str, float] | None) -> np.ndarray:
    """(WIDTH,) float32 in LAYOUT order, each value in [0, bound]."""
    values: dict[str, float] = {"train_loss": train_loss}
    for flag, fields in GROUPS:
        if heldout and all(f in heldout for f in fields):
            values.update({flag: 1.0, **{f: heldout[f] for f in fields}})
    out = np.zeros(WIDTH, dtype=np.float32)
    for i, name in enumerate(LAYOUT):
        v = float(values.get(name, 0.0))
        if not np.isfinite(v):
            v = LOSS_CAP if name in _LOSSES else 0.0
        out[i] = min(max(v / LOSS_CAP if name in _LOSSES else v, 0.0), 1.0)
    return out * np.float32(bound(cfg))


def append(inp: PartyInput, report: np.ndarray) -> PartyInput:
    """The input the protocol protects: the update followed by the report (zeros under a control)."""
    delta = np.concatenate([inp.delta, report.astype(inp.delta.dtype)])
    control = None
    if inp.control_delta is not None:
        control = np.concatenate([inp.control_delta, np.zeros(len(report), dtype=inp.control_delta.dtype)])
    return PartyInput(delta, control, inp.weight)


def split(cfg: Any, vsum: VectorSum, n_update: int) -> tuple[VectorSum, dict[str, Any]]:
    """The protocol's sum -> (the update's sum, what the report sums say): the weighted mean training
    loss over the contributors and each held-out field's weighted mean over the parties that reported
    it, with the share of the round's weight that did (`heldout_weight_share`)."""
    if len(vsum.delta_sum) == n_update:
        return vsum, {}
    tail = dict(zip(LAYOUT, vsum.delta_sum[n_update:] / bound(cfg)))  # name -> sum_i w_i * value_i
    control = None if vsum.control_sum is None else vsum.control_sum[:n_update]
    update = dataclasses.replace(vsum, delta_sum=vsum.delta_sum[:n_update], control_sum=control)
    total = vsum.total_weight
    out: dict[str, Any] = {"train_loss": float(tail["train_loss"]) / total * LOSS_CAP}
    for flag, fields in GROUPS:
        weight = float(tail[flag])
        if weight < 0.5:  # nobody reported it (every weight is >= 1; the fixed point is far finer)
            continue
        if flag == "evaluated":
            out["heldout_weight_share"] = min(weight / total, 1.0)
        for name in fields:
            mean = float(tail[name]) / weight
            out[name] = mean * LOSS_CAP if name in _LOSSES else mean
    return update, out
