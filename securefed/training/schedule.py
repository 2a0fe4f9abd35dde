"""Learning rate across rounds: cosine decay from lr to min_lr over the rounds (as OpenFedLLM does)."""

from __future__ import annotations

import math


def round_lr(round_index: int, rounds: int, lr: float, min_lr: float = 0.0, schedule: str = "cosine") -> float:
    """lr for round `round_index` (0-based) of `rounds`; round 0 gets lr."""
    if schedule == "constant" or rounds <= 1:
        return lr
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * round_index / rounds))
