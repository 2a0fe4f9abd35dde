"""Privacy accounting as pure functions over an immutable spend history, computed by Opacus's accountants.

A party's history is a tuple of `Spend(noise_multiplier, sample_rate, steps)`: one entry per round it
took part in (Opacus's own history format), so composing across rounds is appending. Nothing here
keeps state; `PrivacyLedger` (engine.py) holds one history per party.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np

ACCOUNTANTS = ("rdp", "prv")


@dataclass(frozen=True)
class Spend:
    """`steps` applications of the (subsampled) Gaussian mechanism with this noise and sample rate.

    With `l2_units > 0` it is the Skellam mechanism instead (distributed DP, sample rate 1): integer
    noise of variance (noise_multiplier * l2_units)^2 on a sum whose L2 / L1 sensitivities are
    l2_units / l1_units integer units; accounted with the Skellam RDP bound, not as a Gaussian."""

    noise_multiplier: float
    sample_rate: float
    steps: int
    l2_units: float = 0.0
    l1_units: float = 0.0

    @property
    def skellam(self) -> bool:
        return self.l2_units > 0

    def as_list(self) -> list[float]:
        """The metrics/ledger form: [z, q, steps] (+ [l2, l1] for Skellam)."""
        head = [self.noise_multiplier, self.sample_rate, self.steps]
        return head + [self.l2_units, self.l1_units] if self.skellam else head

    @classmethod
    def from_list(cls, v) -> "Spend":
        z, q, steps, *rest = v
        return cls(float(z), float(q), int(steps), *(float(x) for x in rest))

    def __post_init__(self) -> None:
        if not (self.noise_multiplier >= 0 and math.isfinite(self.noise_multiplier)):
            raise ValueError(f"noise_multiplier must be finite and >= 0, got {self.noise_multiplier}")
        if not 0 < self.sample_rate <= 1:
            raise ValueError(f"sample_rate must be in (0, 1], got {self.sample_rate}")
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if self.skellam and (self.sample_rate != 1 or self.l1_units <= 0):
            raise ValueError("a Skellam spend needs sample_rate 1 and l1_units > 0")


# Integer RDP orders: Agarwal, Kairouz & Liu's Skellam bound (NeurIPS 2021, Theorem 3.5 and its 1-D
# form) is proven for integer alpha > 1 only, so a history with any Skellam spend is composed and
# converted at these orders alone (the Gaussian's RDP holds at every order, integer ones included).
# 2..256 covers the optimum for epsilon down to ~0.05 at delta 1e-5; the tail orders serve smaller ones.
SKELLAM_ORDERS = np.asarray([*range(2, 257), 320, 384, 512, 768, 1024], dtype=np.float64)


def skellam_rdp(orders: np.ndarray, variance: float, l2: float, l1: float) -> np.ndarray:
    """RDP of the (multi-dimensional) Skellam mechanism at each *integer* order, Agarwal, Kairouz & Liu
    2021 (Theorem 3.5): alpha l2^2 / (2 var) + min(((2 alpha - 1) l2^2 + 6 l1) / (4 var^2), 3 l1 / (2 var)).

    The first term is the Gaussian's at equal variance; the second is what integer noise costs on
    top. The theorem covers integer orders only (the paper's reference accountant also evaluates it
    at fractional ones, which reads up to ~1% low): a non-integer order is refused."""
    a = np.asarray(orders, dtype=np.float64)
    if np.any(a < 2) or np.any(a != np.round(a)):
        raise ValueError("the Skellam RDP bound is proven for integer orders >= 2 only")
    gauss = a * l2 * l2 / (2 * variance)
    extra = np.minimum(((2 * a - 1) * l2 * l2 + 6 * l1) / (4 * variance * variance), 3 * l1 / (2 * variance))
    return gauss + extra


def rdp_epsilon(history: Sequence[Spend], delta: float) -> float:
    """RDP composition of Gaussian (subsampled) and Skellam spends at the integer orders the Skellam
    bound covers, converted to (epsilon, delta) with Opacus's conversion (the one its RDP accountant
    uses; valid at any order)."""
    from opacus.accountants.analysis import rdp as rdp_analysis

    orders = SKELLAM_ORDERS
    total = np.zeros_like(orders)
    for s in history:
        if s.skellam:
            variance = (s.noise_multiplier * s.l2_units) ** 2
            total += s.steps * skellam_rdp(orders, variance, s.l2_units, s.l1_units)
        else:
            total += np.asarray(rdp_analysis.compute_rdp(q=s.sample_rate, noise_multiplier=s.noise_multiplier,
                                                         steps=s.steps, orders=list(orders)))
    with warnings.catch_warnings():
        # Order 2 is the smallest the Skellam bound covers: Opacus's advice to widen below it does not apply.
        warnings.filterwarnings("ignore", message="Optimal order is the smallest alpha")
        eps, _ = rdp_analysis.get_privacy_spent(orders=list(orders), rdp=total, delta=delta)
    return float(eps)


def _accountant(name: str):
    from opacus.accountants import PRVAccountant, RDPAccountant

    if name == "rdp":
        return RDPAccountant()
    if name == "prv":
        return PRVAccountant()
    raise ValueError(f"accountant must be one of {ACCOUNTANTS}, got {name!r}")


def trivial_epsilon(spends: Sequence[Spend]) -> float | None:
    """0 for no spend, inf if any spend had no noise; None when an accountant is needed."""
    if not spends:
        return 0.0
    if any(s.noise_multiplier == 0 for s in spends):
        return math.inf
    return None


def epsilon(history: Sequence[Spend], delta: float, accountant: str = "rdp") -> float:
    """(epsilon, delta)-DP epsilon of the composition of `history`; 0 for no spend, inf if any spend
    had no noise."""
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    spends = [s for s in history if s.steps > 0]
    trivial = trivial_epsilon(spends)
    if trivial is not None:
        return trivial
    if any(s.skellam for s in spends):
        if accountant != "rdp":
            raise ValueError("Skellam spends are accounted with RDP only (privacy.accountant='rdp')")
        return _skellam_cached(tuple(spends), float(delta))
    return _epsilon_cached(tuple(spends), float(delta), accountant)


@functools.lru_cache(maxsize=1024)
def _skellam_cached(spends: tuple[Spend, ...], delta: float) -> float:
    return rdp_epsilon(spends, delta)


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
