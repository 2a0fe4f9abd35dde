"""The stateful wrapper: budget exhaustion (stop / warn), composition across rounds, resume, and the
user-level round path (clip -> protocol -> central noise / distributed decode)."""

from __future__ import annotations

import numpy as np
import pytest

from securefed.privacy.accounting import Spend, epsilon
from securefed.privacy.config import PrivacyConfig
from securefed.privacy.engine import FederationFacts, PrivacyEngine
from securefed.protocols.base import VectorSum

PARTIES = ("a", "b", "c")


def engine(rounds=3, dim=64, **kw) -> PrivacyEngine:
    facts = FederationFacts({"a": 40, "b": 80, "c": 20}, {p: rounds for p in PARTIES}, rounds, 3, 5, 8, dim, 1.0, 0, PARTIES)
    return PrivacyEngine(PrivacyConfig(**kw), facts)


def example_round(e: PrivacyEngine, r: int) -> tuple[tuple[str, ...], dict]:
    admitted = e.admit_round(r, PARTIES)
    for p in admitted:
        s = e.example_spend(p)
        e.record_example(p, s.noise_multiplier, s.sample_rate, s.steps)
    return admitted, e.close_round()


def test_epsilon_composes_over_rounds_per_party():
    e = engine(mechanism="example", noise_multiplier=1.0)
    _, m1 = example_round(e, 0)
    _, m2 = example_round(e, 1)
    q = 8 / 40
    assert m2["dp_epsilon"]["a"] == pytest.approx(epsilon([Spend(1.0, q, 10)], 1e-5))
    assert m1["dp_epsilon"]["a"] < m2["dp_epsilon"]["a"]
    assert m2["dp_epsilon"]["b"] < m2["dp_epsilon"]["a"] < m2["dp_epsilon"]["c"]  # smaller q, smaller epsilon
    assert m2["dp_spends"]["c"] == [1.0, 8 / 20, 5]


def test_target_epsilon_solves_noise_over_planned_rounds_and_is_met():
    e = engine(rounds=3, mechanism="example", target_epsilon=3.0)
    for r in range(3):
        admitted, m = example_round(e, r)
        assert admitted == PARTIES
    assert max(m["dp_epsilon"].values()) <= 3.0 and max(m["dp_epsilon"].values()) > 2.9


def test_budget_exhausted_stop_and_warn():
    # noise fixed, budget only enough for two rounds of party c (q = 0.4)
    two = epsilon([Spend(1.0, 0.4, 10)], 1e-5)
    e = engine(mechanism="example", noise_multiplier=1.0, target_epsilon=two * 1.01)
    assert example_round(e, 0)[0] == PARTIES
    assert example_round(e, 1)[0] == PARTIES
    admitted, m = example_round(e, 2)
    assert "c" not in admitted and m["dp_stopped"] == ["c"]
    assert m["dp_epsilon"]["c"] <= two * 1.01  # never exceeded
    w = engine(mechanism="example", noise_multiplier=1.0, target_epsilon=two * 1.01, on_budget_exhausted="warn")
    example_round(w, 0), example_round(w, 1)
    with pytest.warns(UserWarning, match="c: round 3"):
        admitted, m = example_round(w, 2)
    assert admitted == PARTIES and m["dp_over_budget"] == ["c"] and m["dp_epsilon"]["c"] > two * 1.01


def test_restore_rebuilds_the_ledger():
    e = engine(mechanism="example", noise_multiplier=1.0)
    rows = [example_round(e, 0)[1], example_round(e, 1)[1]]
    fresh = engine(mechanism="example", noise_multiplier=1.0)
    fresh.restore(rows)
    assert fresh.ledger == e.ledger


def _sum(e: PrivacyEngine, deltas: dict[str, np.ndarray]) -> VectorSum:
    inputs = {p: e.party_input(d, None, 123.0) for p, d in deltas.items()}
    assert all(i.weight == 1.0 for i in inputs.values())  # user-level: weight 1, sensitivity C
    total = np.sum([i.delta.astype(np.float64) for i in inputs.values()], axis=0)
    return VectorSum(total, None, float(len(inputs)), tuple(sorted(inputs)))


@pytest.mark.parametrize("mechanism", ["user-central", "user-distributed"])
def test_user_level_round(mechanism):
    dim = 512
    e = engine(dim=dim, mechanism=mechanism, noise_multiplier=2.0, update_clip_norm=0.5, dropout_tolerance=0.0)
    rng = np.random.default_rng(0)
    deltas = {p: rng.normal(size=dim).astype(np.float32) for p in e.admit_round(0, PARTIES)}
    out = e.finish_round(_sum(e, deltas))
    m = e.close_round()
    clipped = sum(d / np.linalg.norm(d) * 0.5 for d in deltas.values())
    noise = out.delta_sum - clipped
    std = out.stats["dp_noise_std"]
    assert std >= 2.0 * 0.5 and abs(noise.std() / std - 1) < 0.1
    assert m["dp_epsilon"]["a"] == pytest.approx(epsilon([Spend(2.0, 1.0, 1)], 1e-5), rel=0.02)
