"""Sensitivity that survives the protocol's encoding, for user-level DP with central noise.

The accountant assumes each party moves the sum by at most C in L2. A fixed-point protocol rounds
every coordinate to its quantum u (secagg: clip / 2^precision_bits; he: max_weight * clip / Q), and
randomized rounding of a d-coordinate vector can add up to sqrt(d) u to its norm (+32% at d = 4.4M,
C = 0.1, u = 2^-16). Two ways to keep the encoded update inside C by construction:

- "grid" (secagg with a power-of-two clip, so u is a power of two): the party rounds its clipped
  update onto the protocol's grid itself, by conditional randomized rounding (redrawn until the
  rounded norm is <= C, Kairouz, Liu & Steinke 2021), after clipping to the c_in whose rounding bound
  is C. The protocol's own stochastic rounding floor(k + U) leaves an integer k unchanged, so what is
  summed is exactly the party's rounded vector. Costs ~1% of the clip at d = 4.4M.
- "margin" (any other quantum): clip to C - sqrt(d) u, the worst case of any per-coordinate rounding
  error < u. Refused when that leaves less than half of C.
- "float" (plain): clip to C (1 - 2^-22) so the float32 cast cannot step past C.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from securefed.privacy.distributed import conditional_round, rounding_bound
from securefed.privacy.user_level import clip_l2

FLOAT32_SLACK = 2.0**-22  # relative norm growth of a float32 cast is <= 2^-24 per coordinate


def is_power_of_two(x: float) -> bool:
    return x > 0 and math.frexp(x)[0] == 0.5


def weight_bound(sizes) -> int:
    """A public bound on any party's weight (the next power of two of the largest; 1 for none), so the
    fixed-point encoders can size their integers without the server learning an exact dataset size."""
    sizes = list(sizes)
    return 1 << int(max(sizes) - 1).bit_length() if sizes else 1


@dataclass(frozen=True)
class SafeEncoding:
    mode: str  # "grid" | "margin" | "float"
    clip: float  # C: the sensitivity the accountant uses
    inner_clip: float  # what the update is clipped to before rounding
    unit: float  # the protocol's quantum (0 for "float")
    beta: float

    @classmethod
    def plan(cls, clip: float, dim: int, unit: float, exact_grid: bool, beta: float) -> "SafeEncoding":
        if unit <= 0:
            return cls("float", clip, clip * (1 - FLOAT32_SLACK), 0.0, beta)
        if exact_grid:
            inner = grid_inner_clip(clip / unit, dim, beta) * unit
            if inner > clip / 2:
                return cls("grid", clip, inner, unit, beta)
        inner = clip - math.sqrt(dim) * unit
        if inner <= clip / 2:
            raise ValueError(f"privacy.update_clip_norm={clip:g} is too small for the protocol's quantum {unit:.3g} at "
                             f"{dim} coordinates (rounding could add up to {math.sqrt(dim) * unit:.3g} to the norm): "
                             "raise the protocol's precision (aggregation.secagg.precision_bits / he.value_bits) "
                             "or the clip")
        return cls("margin", clip, inner, unit, beta)

    def apply(self, delta: np.ndarray, source) -> np.ndarray:
        """(dim,) float32 update whose encoded form has L2 norm <= clip. `source`: .random(count)."""
        clipped, _ = clip_l2(delta, self.inner_clip)
        if self.mode != "grid":
            return clipped.astype(np.float32)
        ints = conditional_round(clipped / self.unit, self.clip / self.unit, source)
        return (ints * self.unit).astype(np.float32)  # exact: power-of-two unit, |k| <= clip / unit < 2^24


def grid_inner_clip(bound: float, dim: int, beta: float) -> float:
    """Largest c with rounding_bound(c, dim, beta) <= bound (integer units), or 0 if none:
    c^2 + a c + (dim/4 + a sqrt(dim)/2 - bound^2) <= 0 with a = sqrt(2 ln(1/beta))."""
    a = math.sqrt(2 * math.log(1 / beta))
    const = dim / 4 + a * math.sqrt(dim) / 2 - bound * bound
    disc = a * a - 4 * const
    if disc < 0:
        return 0.0
    c = (-a + math.sqrt(disc)) / 2
    assert c <= 0 or rounding_bound(c, dim, beta) <= bound * (1 + 1e-12)
    return max(0.0, c)
