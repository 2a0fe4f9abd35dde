"""Privacy accounting as pure functions over an immutable spend history, computed by Opacus's accountants.

A party's history is a tuple of `Spend(noise_multiplier, sample_rate, steps)`: one entry per round it
took part in (Opacus's own history format), so composing across rounds is appending. Nothing here
keeps state; `PrivacyLedger` (engine.py) holds one history per party.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Sequence

ACCOUNTANTS = ("rdp", "prv")


@dataclass(frozen=True)
class Spend:
    """`steps` applications of the (subsampled) Gaussian mechanism with this noise and sample rate."""

    noise_multiplier: float
    sample_rate: float
    steps: int

    def __post_init__(self) -> None:
        if not (self.noise_multiplier >= 0 and math.isfinite(self.noise_multiplier)):
            raise ValueError(f"noise_multiplier must be finite and >= 0, got {self.noise_multiplier}")
        if not 0 < self.sample_rate <= 1:
            raise ValueError(f"sample_rate must be in (0, 1], got {self.sample_rate}")
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")


def _accountant(name: str):
    from opacus.accountants import PRVAccountant, RDPAccountant

    if name == "rdp":
        return RDPAccountant()
    if name == "prv":
        return PRVAccountant()
    raise ValueError(f"accountant must be one of {ACCOUNTANTS}, got {name!r}")


def epsilon(history: Sequence[Spend], delta: float, accountant: str = "rdp") -> float:
    """(epsilon, delta)-DP epsilon of the composition of `history`; 0 for no spend, inf if any spend
    had no noise."""
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    spends = [s for s in history if s.steps > 0]
    if not spends:
        return 0.0
    if any(s.noise_multiplier == 0 for s in spends):
        return math.inf
    return _epsilon_cached(tuple(spends), float(delta), accountant)


@functools.lru_cache(maxsize=4096)
def _epsilon_cached(spends: tuple[Spend, ...], delta: float, accountant: str) -> float:
    acc = _accountant(accountant)
    # Merge equal consecutive mechanisms: the accountants treat (sigma, q, a) then (sigma, q, b) exactly
    # as (sigma, q, a + b), and a shorter history is faster for PRV.
    merged: list[tuple[float, float, int]] = []
    for s in spends:
        if merged and merged[-1][:2] == (s.noise_multiplier, s.sample_rate):
            merged[-1] = (s.noise_multiplier, s.sample_rate, merged[-1][2] + s.steps)
        else:
            merged.append((s.noise_multiplier, s.sample_rate, s.steps))
    acc.history = merged
    return float(acc.get_epsilon(delta=delta))


@functools.lru_cache(maxsize=1024)
def solve_noise_multiplier(target_epsilon: float, delta: float, sample_rate: float, steps: int,
                           accountant: str = "rdp") -> float:
    """The smallest noise multiplier (to Opacus's tolerance) whose `steps`-fold composition at
    `sample_rate` stays within (target_epsilon, delta): Opacus's `get_noise_multiplier`."""
    from opacus.accountants.utils import get_noise_multiplier

    if not (target_epsilon > 0 and math.isfinite(target_epsilon)):
        raise ValueError(f"target_epsilon must be finite and > 0, got {target_epsilon}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not 0 < sample_rate <= 1:
        raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
    return float(get_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta, sample_rate=sample_rate,
                                      steps=steps, accountant=accountant, epsilon_tolerance=0.01))


@dataclass(frozen=True)
class BudgetCheck:
    epsilon_before: float
    epsilon_after: float  # if the planned spend is taken
    exceeds: bool  # epsilon_after > target (never for an unlimited budget)


def check_budget(history: Sequence[Spend], planned: Spend, target_epsilon: float | None, delta: float,
                 accountant: str = "rdp") -> BudgetCheck:
    """Would taking `planned` push the party past its target? Checked before the spend, so a party
    never exceeds its budget in "stop" mode."""
    before = epsilon(history, delta, accountant)
    after = epsilon((*history, planned), delta, accountant)
    exceeds = target_epsilon is not None and after > target_epsilon * (1 + 1e-9)
    return BudgetCheck(before, after, exceeds)


def example_sample_rate(expected_batch: int, dataset_size: int) -> float:
    """Poisson sampling rate of one DP-SGD step: expected batch / the party's records (capped at 1)."""
    if dataset_size < 1 or expected_batch < 1:
        raise ValueError("expected_batch and dataset_size must be >= 1")
    return min(1.0, expected_batch / dataset_size)


def resolve_noise_multiplier(noise_multiplier: float | None, target_epsilon: float | None, delta: float,
                             sample_rate: float, steps: int, accountant: str, margin: float = 1.0) -> float:
    """The given multiplier, else the one solved for the target over the planned `steps`.

    `margin` < 1 (a fraction of the noise that may be lost, e.g. to dropouts) scales the solved
    multiplier up so that `margin` of it still meets the target."""
    if noise_multiplier is not None:
        return float(noise_multiplier)
    if target_epsilon is None:
        raise ValueError("give noise_multiplier or target_epsilon")
    if not 0 < margin <= 1:
        raise ValueError(f"margin must be in (0, 1], got {margin}")
    return solve_noise_multiplier(float(target_epsilon), float(delta), float(sample_rate), int(steps),
                                  accountant) / margin
