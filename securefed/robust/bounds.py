"""The largest sum honest, clipped parties can produce, the party-side clipping that makes it so,
and the server's check of every decoded sum against it (any protocol: plain, secagg, he).

Party i sends w_i * x_i with x_i clipped per coordinate to c (the protocol's own `clip`, or
aggregation.bound.coord) and, where a norm clip is configured, to ||x_i||_2 <= C. So for the decoded
W = sum_i w_i over the n contributors:

    L-infinity:  max_j |sum_i w_i x_ij|  <=  c W + e          (e: the protocol's rounding bound)
    L2:          ||sum_i w_i x_i||_2     <=  C W + e sqrt(m)
    control:     max_j |sum_i u_ij| <= c_u n + e_u,  ||sum_i u_i||_2 <= C_u n + e_u sqrt(m)  (unweighted)

A sum past either bound has a party outside its clip; the round is rejected (SumOutOfRange) and the
federation goes on. This bounds a malicious party's influence to that of an honest party at the
edge of the clip (it may still point its whole budget in the worst direction); it does not find it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from securefed.protocols.base import PartyInput, SumOutOfRange, VectorSum

INF = math.inf
REL_TOL = 1e-6  # float32 carriers: a value clipped to c in float64 may round up by 2^-24 relative


@dataclass(frozen=True)
class InputBound:
    """What every honest party's input satisfies (inf: no such clip)."""

    coord: float = INF
    norm: float = INF
    control_coord: float = INF
    control_norm: float = INF

    @property
    def active(self) -> bool:
        return any(math.isfinite(v) for v in (self.coord, self.norm, self.control_coord, self.control_norm))

    def apply(self, data: PartyInput) -> PartyInput:
        """The honest party's clipping: delta per coordinate then in L2, control per coordinate and L2."""
        delta = _clip(data.delta, self.coord, self.norm)
        control = (None if data.control_delta is None
                   else _clip(data.control_delta, self.control_coord, self.control_norm))
        if delta is data.delta and control is data.control_delta:
            return data
        return dataclasses.replace(data, delta=delta, control_delta=control)

    def check(self, result: VectorSum) -> VectorSum:
        """Raises SumOutOfRange naming the bound a decoded sum exceeds; returns it unchanged otherwise."""
        n, w, m = len(result.contributors), float(result.total_weight), result.delta_sum.size
        e_delta, e_control, e_weight = _rounding(result.stats, n, self.coord, self.control_coord)
        w_hi = w + e_weight
        _check("delta", result.delta_sum, self.coord, self.norm, w_hi, e_delta, m)
        if result.control_sum is not None:
            _check("control", result.control_sum, self.control_coord, self.control_norm, float(n), e_control, m)
        return result


def _clip(x: np.ndarray, coord: float, norm: float) -> np.ndarray:
    out = x
    if math.isfinite(coord) and np.any(np.abs(x) > coord):
        out = np.clip(x, -coord, coord).astype(x.dtype, copy=False)
    if math.isfinite(norm):
        size = float(np.linalg.norm(out.astype(np.float64)))
        if size > norm:
            out = (out.astype(np.float64) * (norm / size)).astype(x.dtype)
    return out


def _check(name: str, v: np.ndarray, coord: float, norm: float, scale: float, err: float, m: int) -> None:
    if math.isfinite(coord):
        peak, limit = float(np.max(np.abs(v))), (coord * scale + err) * (1 + REL_TOL)
        if peak > limit:
            raise SumOutOfRange(f"decoded sum: max |{name}| {peak:.4g} exceeds what clipped parties can send, "
                                f"{limit:.4g} (clip {coord:g} x weight {scale:g} + rounding {err:.3g})")
    if math.isfinite(norm):
        size, limit = float(np.linalg.norm(v)), (norm * scale + err * math.sqrt(m)) * (1 + REL_TOL)
        if size > limit:
            raise SumOutOfRange(f"decoded sum: ||{name}||_2 {size:.4g} exceeds what clipped parties can send, "
                                f"{limit:.4g} (norm clip {norm:g} x weight {scale:g} + rounding)")


def _rounding(stats: Mapping[str, Any], n: int, coord: float, control_coord: float) -> tuple[float, float, float]:
    """(delta, control, total weight) worst-case rounding of the protocol's sum, from the bound it
    publishes in stats["error_bound"]: a number (delta only, secagg: n quanta of clip / 2^p, whose
    control quantum is control_clip / 2^p) or a dict (he). Plain rounds nothing."""
    eb = stats.get("error_bound")
    if isinstance(eb, Mapping):
        return (float(eb.get("delta_sum", 0.0)), float(eb.get("control_sum", 0.0)),
                float(eb.get("total_weight", 0.0)))
    if isinstance(eb, (int, float)):
        ratio = control_coord / coord if math.isfinite(coord) and math.isfinite(control_coord) else 0.0
        return float(eb), float(eb) * ratio, 0.0
    return 0.0, 0.0, 0.0


def party_clip(cfg: Any) -> InputBound:
    """What a party of a RootConfig clips its update to before the privacy engine and the protocol
    (aggregation.bound only: the protocols and user-level DP clip on their own)."""
    b = cfg.aggregation.bound
    return InputBound(INF if b.coord is None else b.coord, INF if b.norm is None else b.norm,
                      INF, INF if b.control_norm is None else b.control_norm)


def input_bound(cfg: Any) -> InputBound:
    """The bound every honest party of a RootConfig satisfies: aggregation.bound, the protocol's own
    clip (secagg.clip / control_clip, he.clip for both) and user-central DP's update_clip_norm."""
    agg, privacy = cfg.aggregation, cfg.privacy
    section = agg.section()
    clip = getattr(section, "clip", None)
    coord = min(INF if clip is None else float(clip), INF if agg.bound.coord is None else agg.bound.coord)
    control_clip = getattr(section, "control_clip", clip)
    control_coord = INF if control_clip is None else float(control_clip)
    norm = INF if agg.bound.norm is None else agg.bound.norm
    if privacy.mechanism == "user-central":
        norm = min(norm, privacy.update_clip_norm)
    if privacy.mechanism == "user-distributed":
        # inputs are the integer carrier of Skellam noise shares: only the protocol's own clip holds
        return InputBound(coord=INF if clip is None else float(clip), control_coord=control_coord)
    return InputBound(coord, norm, control_coord, INF if agg.bound.control_norm is None else agg.bound.control_norm)
