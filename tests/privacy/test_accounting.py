"""Accounting: epsilon pinned against Opacus's accountants for fixed (noise, rate, steps, delta)."""

from __future__ import annotations

import math

import pytest

from securefed.privacy.accounting import (
    Spend,
    check_budget,
    epsilon,
    example_sample_rate,
    resolve_noise_multiplier,
    solve_noise_multiplier,
)

# (history, delta, accountant) -> epsilon, computed once with opacus 1.6.0 and pinned
PINNED = [
    ([Spend(1.0, 0.01, 1000)], 1e-5, "rdp", 2.1013652716430564),
    ([Spend(1.1, 0.05, 200)], 1e-5, "rdp", 4.443048388886526),
    ([Spend(0.8, 1.0, 5)], 1e-5, "rdp", 16.269125946682543),
    ([Spend(0.8, 1.0, 5)], 1e-6, "rdp", 17.598940103711577),
    ([Spend(1.0, 0.01, 500), Spend(2.0, 0.02, 100)], 1e-5, "rdp", 1.7013006016862813),
    ([Spend(1.0, 0.01, 1000)], 1e-5, "prv", 1.8383716370172951),
    ([Spend(1.1, 0.05, 200)], 1e-5, "prv", 3.9719206266107423),
]


@pytest.mark.parametrize("history,delta,accountant,expected", PINNED)
def test_epsilon_pinned(history, delta, accountant, expected):
    rel = 1e-12 if accountant == "rdp" else 1e-6  # PRV discretises numerically
    assert epsilon(history, delta, accountant) == pytest.approx(expected, rel=rel)


def test_composition_across_rounds_is_appending():
    # the accountant treats equal mechanisms back to back exactly as one longer run
    assert epsilon([Spend(1.0, 0.01, 500)] * 2, 1e-5) == epsilon([Spend(1.0, 0.01, 1000)], 1e-5)
    assert epsilon([Spend(1.0, 0.01, 500)], 1e-5) < epsilon([Spend(1.0, 0.01, 1000)], 1e-5)


def test_edge_cases():
    assert epsilon([], 1e-5) == 0.0
    assert epsilon([Spend(0.0, 0.1, 3)], 1e-5) == math.inf
    with pytest.raises(ValueError, match="sample_rate"):
        Spend(1.0, 0.0, 1)
    with pytest.raises(ValueError, match="delta"):
        epsilon([Spend(1.0, 0.1, 1)], 0.0)


def test_solved_noise_meets_the_target():
    z = solve_noise_multiplier(4.0, 1e-5, 0.05, 200, "rdp")
    assert z == pytest.approx(1.16455078125)
    eps = epsilon([Spend(z, 0.05, 200)], 1e-5)
    assert 4.0 - 0.05 < eps <= 4.0
    assert resolve_noise_multiplier(0.7, 4.0, 1e-5, 0.05, 200, "rdp") == 0.7  # given wins
    assert resolve_noise_multiplier(None, 4.0, 1e-5, 0.05, 200, "rdp", margin=0.5) == pytest.approx(2 * z)


def test_budget_check_before_spending():
    h = [Spend(1.0, 0.05, 100)]
    c = check_budget(h, Spend(1.0, 0.05, 100), target_epsilon=100.0, delta=1e-5)
    assert not c.exceeds and c.epsilon_before < c.epsilon_after
    assert check_budget(h, Spend(1.0, 0.05, 100), target_epsilon=c.epsilon_before, delta=1e-5).exceeds
    assert not check_budget(h, Spend(1.0, 0.05, 100), None, 1e-5).exceeds
    assert example_sample_rate(8, 100) == 0.08 and example_sample_rate(8, 4) == 1.0


def test_strong_noise_is_accounted_at_wider_orders_without_opacus_warning():
    """z=20 at q=0.001 once: Opacus's default orders stop at 63, where it warns 'Optimal order is the
    largest alpha'; the widened grid reaches the interior optimum: no warning, and a tighter epsilon."""
    import warnings

    from opacus.accountants import RDPAccountant

    from securefed.privacy.accounting import Spend, epsilon

    loose = RDPAccountant()
    loose.history = [(20.0, 0.001, 1)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        default_eps = loose.get_epsilon(delta=1e-5)
    assert any("largest alpha" in str(w.message) for w in caught)  # the trap, as Opacus has it
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        eps = epsilon([Spend(20.0, 0.001, 1)], 1e-5)
    assert 0 < eps < default_eps
