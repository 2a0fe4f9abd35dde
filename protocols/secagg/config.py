"""SecAgg configuration: validated once, with defaults that are safe without tuning.

Round-dependent values (the neighbour count k and the threshold t when left to auto) are resolved
per round by `resolve(n)`, since only the round knows how many parties were selected.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class SecAggConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # "complete": every pair masks (SecAgg, O(n^2) work); "sparse": a random k-regular graph
    # (SecAgg+, O(n log n)); "auto": complete while n - 1 <= the sparse k, else sparse.
    graph: Literal["complete", "sparse", "auto"] = "auto"
    # k: neighbours per party for the sparse graph; None = auto, O(log n) (see resolve()).
    neighbours: int | None = Field(default=None, ge=2)
    # t: shares needed to reconstruct a party's secrets; None = ceil(threshold_fraction * k).
    # t must exceed k/2 so two disjoint sets of neighbours can never both reach it.
    threshold: int | None = Field(default=None, ge=2)
    threshold_fraction: float = Field(default=2 / 3, gt=0.5, le=1.0)
    clip: float = Field(default=1.0, gt=0)  # per-coordinate bound c on delta
    control_clip: float = Field(default=1.0, gt=0)  # per-coordinate bound on SCAFFOLD's control
    precision_bits: int = Field(default=16, ge=2, le=40)  # ring unit = clip / 2^precision_bits
    max_parties: int = Field(default=10_000, ge=3)

    @field_validator("clip", "control_clip")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be finite")
        return v

    @model_validator(mode="after")
    def _threshold_fits(self) -> SecAggConfig:
        if self.threshold is not None and self.neighbours is not None:
            if self.threshold > self.neighbours:
                raise ValueError(f"threshold={self.threshold} exceeds neighbours={self.neighbours}")
            if 2 * self.threshold <= self.neighbours:
                raise ValueError(f"threshold={self.threshold} must exceed neighbours/2")
        return self

    def resolve(self, n: int) -> tuple[str, int, int]:
        """(graph kind, k, t) for a round of n parties. Raises ValueError naming the field."""
        if n < 3:
            raise ValueError(f"party_ids: secagg needs >= 3 parties, got {n}")
        if n > self.max_parties:
            raise ValueError(f"max_parties={self.max_parties} exceeded by a round of {n}")
        # Bell et al. show k = O(log n) keeps the graph connected and secure w.h.p.; 3*log2(n)
        # (rounded up to even, at least 8) leaves room for a third of the neighbours to drop.
        auto_k = max(8, 2 * math.ceil(1.5 * math.log2(n)))
        k = self.neighbours if self.neighbours is not None else auto_k
        kind = self.graph
        if kind == "auto":
            kind = "complete" if n - 1 <= k else "sparse"
        if kind == "complete" or k >= n - 1:
            k = n - 1
        else:
            k += k % 2  # the ring construction gives even degree
            if k >= n - 1:
                kind, k = "complete", n - 1
        if self.threshold is not None:
            t = self.threshold
            if t > k:
                raise ValueError(f"threshold={t} exceeds the {k} neighbours of a {n}-party round")
            if 2 * t <= k:
                raise ValueError(f"threshold={t} must exceed half of the {k} neighbours")
        else:
            t = max(2, math.ceil(self.threshold_fraction * k), k // 2 + 1)
            t = min(t, k)
        if t < 2 or 2 * t <= k:
            raise ValueError(f"threshold={t} unsafe for {k} neighbours")
        return kind, k, t
