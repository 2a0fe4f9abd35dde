"""The robust step: the plain protocol's stacked updates -> one VectorSum for the algorithm.

The server algorithm still sees only an Aggregate (simulation.steps.to_aggregate builds it from this
VectorSum): the robust estimate r of the mean update travels as delta_sum = W r with W the round's
total weight, so Aggregate.mean_delta() is r for every optimiser (FedAvg, FedAvgM, FedProx,
FedAdagrad, FedYogi, FedAdam). SCAFFOLD's control deltas (unweighted) get the same coordinate-wise
rule under median / trimmed_mean, the plain mean of the parties Multi-Krum kept, and the plain mean
under norm_bound (bound them with aggregation.bound.control_norm, which the sum check enforces).
"""

from __future__ import annotations

import numpy as np

from securefed.protocols.base import ProtocolAbort, VectorSum, check_sum
from securefed.protocols.plain import StackedUpdates
from securefed.robust import rules
from securefed.robust.config import RobustConfig


def robust_sum(stacked: StackedUpdates, cfg: RobustConfig, rng: np.random.Generator | None = None) -> VectorSum:
    """`rng` draws norm_bound's noise (robustness noise, not a DP guarantee: nothing accounts it)."""
    x, c, w = stacked.deltas, stacked.controls, stacked.weights
    n, total = x.shape[0], float(w.sum())
    kept = n
    if cfg.rule == "mean":
        est, ctrl = (w[:, None] * x).sum(axis=0) / total, None if c is None else c.mean(axis=0)
    elif cfg.rule == "median":
        est, ctrl = rules.median(x), None if c is None else rules.median(c)
    elif cfg.rule == "trimmed_mean":
        est = rules.trimmed_mean(x, cfg.trim_fraction)
        ctrl = None if c is None else rules.trimmed_mean(c, cfg.trim_fraction)
    elif cfg.rule == "multi_krum":
        est, keep = rules.multi_krum(x, w, cfg.krum_byzantine, cfg.krum_select)
        ctrl, kept = None if c is None else c[keep].mean(axis=0), len(keep)
    elif cfg.rule == "norm_bound":
        noise = None
        if cfg.noise_std > 0:
            if rng is None:
                raise ValueError("norm_bound with noise_std > 0 needs an rng")
            noise = rng.normal(0.0, cfg.noise_std, x.shape[1])
        est, ctrl = rules.norm_bound(x, w, cfg.norm, noise), None if c is None else c.mean(axis=0)
    else:
        raise ValueError(f"unknown robust rule {cfg.rule!r}")
    return VectorSum(est * total, None if ctrl is None else ctrl * n, total, stacked.contributors,
                     {"robust_kept": kept})


def run_robust_round(protocol, ctx, inputs, server_material, party_material, cfg: RobustConfig, seed: int,
                     bound=None):
    """protocols.driver.run_round under plain, with the robust rule in place of the sum:
    (VectorSum of the robust estimate, traffic). `seed`: norm_bound's noise for this round. The
    plain sum is checked against `bound` (the parties' clip) first, as under any protocol: the robust
    estimate itself need not be within it (a coordinate-wise median of vectors of norm <= C can
    exceed C)."""
    from securefed.protocols.driver import run_round  # the in-process carrier

    if protocol.name != "plain":
        raise ValueError(f"aggregation.robust.rule={cfg.rule!r} needs the plain protocol, not {protocol.name!r}")
    session = protocol.server(ctx, server_material, keep_updates=True)
    total, traffic = run_round(protocol, ctx, inputs, server_material, party_material, server=session)
    check_sum(total, ctx, bound)
    try:
        return robust_sum(session.stacked(), cfg, np.random.default_rng(seed)), traffic
    except ValueError as e:  # e.g. too few contributors left for Multi-Krum's f: this round only
        raise ProtocolAbort(f"robust rule {cfg.rule}: {e}") from None
