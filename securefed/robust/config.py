"""`aggregation.bound` (party-side clipping the server checks the sum against) and
`aggregation.robust` (a robust rule over individual updates, plain protocol only)."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

RuleName = Literal["mean", "median", "trimmed_mean", "multi_krum", "norm_bound"]


class BoundConfig(BaseModel):
    """Clipping every honest party applies to its update before any protocol. The server rejects a
    decoded sum that parties clipped this way cannot produce (securefed.robust.bounds). secagg and he
    also clip each coordinate to their own `clip`; the smaller bound is the one checked."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    coord: float | None = Field(None, gt=0, description="per-coordinate clip |delta_j| <= coord (plain has none else)")
    norm: float | None = Field(None, gt=0, description="L2 clip of a party's delta")
    control_norm: float | None = Field(None, gt=0, description="L2 clip of a party's SCAFFOLD control delta")

    @field_validator("coord", "norm", "control_norm")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be finite")
        return v

    @property
    def any(self) -> bool:
        return self.coord is not None or self.norm is not None or self.control_norm is not None


class RobustConfig(BaseModel):
    """A Byzantine-robust rule over the round's individual updates (needs aggregation.protocol = "plain":
    secagg and he never show the server one party's update)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rule: RuleName = "mean"
    trim_fraction: float = Field(0.1, ge=0, lt=0.5, description="trimmed_mean: fraction cut at each end")
    krum_byzantine: int = Field(1, ge=0, description="multi_krum: f, the malicious parties tolerated")
    krum_select: int | None = Field(None, ge=1, description="multi_krum: m updates averaged (default n - f)")
    norm: float = Field(1.0, gt=0, description="norm_bound: L2 norm each update is clipped to")
    noise_std: float = Field(0.0, ge=0, description="norm_bound: std of Gaussian noise added to the mean")

    @model_validator(mode="after")
    def _finite(self) -> "RobustConfig":
        if not (math.isfinite(self.norm) and math.isfinite(self.noise_std)):
            raise ValueError("norm and noise_std must be finite")
        return self


def check_robust(root) -> None:
    """Cross-section rules (RootConfig's validator): raises ValueError with one line saying why."""
    agg, rule = root.aggregation, root.aggregation.robust.rule
    if rule != "mean":
        if agg.protocol != "plain":
            raise ValueError(f"aggregation.robust.rule={rule!r} needs aggregation.protocol='plain': "
                             f"{agg.protocol} never shows the server one party's update (use aggregation.bound)")
        if root.privacy.mechanism in ("user-central", "user-distributed"):
            raise ValueError(f"aggregation.robust.rule={rule!r} cannot combine with privacy.mechanism="
                             f"{root.privacy.mechanism!r}: its noise is calibrated to the sum, not to a robust rule")
        selected, f = root.sampling.per_round(root.parties), agg.robust.krum_byzantine
        if rule == "multi_krum" and selected <= f + 2:
            raise ValueError(f"aggregation.robust.krum_byzantine={f} needs more than f + 2 = {f + 2} parties a round "
                             f"(sampling selects {selected})")
        if root.simulation.backend != "inprocess":
            raise ValueError(f"aggregation.robust.rule={rule!r} runs with simulation.backend='inprocess' only")
    if agg.bound.any and root.privacy.mechanism == "user-distributed":
        raise ValueError("aggregation.bound cannot combine with privacy.mechanism='user-distributed': parties "
                         "send an integer carrier of noise shares; the protocol's own clip is checked")
