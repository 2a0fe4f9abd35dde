"""User-level DP (DP-FedAvg, McMahan et al. 2018): pure functions.

Each party's whole update is clipped to L2 norm C and sent with weight 1, so adding or removing one
party changes the sum by at most C (sample-count weights would make the sensitivity w_i * C and leak
dataset sizes). The server then averages over contributors. With central noise the server adds
N(0, (z C)^2) per coordinate to the sum before the algorithm step (the server is trusted with that).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from securefed.protocols.base import PartyInput, VectorSum

NormalSource = Callable[[int, float], np.ndarray]  # (count, std) -> (count,) Gaussian noise


def clip_l2(vector: np.ndarray, bound: float) -> tuple[np.ndarray, float]:
    """(vector scaled to L2 norm <= bound as float64, its original norm)."""
    if not bound > 0:
        raise ValueError(f"bound must be > 0, got {bound}")
    v = np.asarray(vector, dtype=np.float64)
    norm = float(np.linalg.norm(v))
    return (v * (bound / norm) if norm > bound else v.copy()), norm


def user_level_input(delta: np.ndarray, clip: float) -> tuple[PartyInput, float]:
    """A party's protocol input under user-level DP: clipped delta, weight 1, no control. (input, norm)."""
    clipped, norm = clip_l2(delta, clip)
    return PartyInput(clipped.astype(np.float32), None, 1.0), norm


def add_central_noise(vsum: VectorSum, noise_multiplier: float, clip: float, normal: NormalSource) -> VectorSum:
    """The server's Gaussian mechanism on the sum: delta_sum + N(0, (z C)^2 I). Everything else (total
    weight = contributor count under user-level DP, contributors) is unchanged."""
    if noise_multiplier < 0 or clip <= 0:
        raise ValueError("noise_multiplier must be >= 0 and clip > 0")
    std = noise_multiplier * clip
    noise = normal(vsum.delta_sum.size, std).reshape(vsum.delta_sum.shape)
    stats = {**vsum.stats, "dp_noise_std": std}
    return dataclasses.replace(vsum, delta_sum=vsum.delta_sum + noise, stats=stats)
