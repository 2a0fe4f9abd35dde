"""Each robust rule against a few lines of numpy written from its paper's definition, the robust step
feeding every server optimiser through an Aggregate, and the plain-only refusal."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from securefed import algorithms
from securefed.aggregate import FlatLayout
from securefed.algorithms.config import AlgorithmConfig
from securefed.config import load_config
from securefed.errors import ConfigError
from securefed.protocols import registry
from securefed.protocols.base import PartyInput, ProtocolAbort, RoundContext, SumOutOfRange
from securefed.protocols.plain import StackedUpdates
from securefed.robust import rules
from securefed.robust.bounds import InputBound
from securefed.robust.config import RobustConfig
from securefed.robust.stacked import robust_sum, run_robust_round
from securefed.simulation.steps import to_aggregate

RNG = np.random.default_rng(7)
X = RNG.normal(size=(7, 5))
X[2] *= 50  # one outlier row
W = np.array([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0])


def test_median_and_trimmed_mean_match_numpy():
    for j in range(5):
        col = sorted(X[:, j])
        assert rules.median(X)[j] == col[3]
        assert rules.trimmed_mean(X, 0.3)[j] == pytest.approx(np.mean(col[2:5]), abs=1e-12)  # floor(0.3*7)=2
    assert np.allclose(rules.trimmed_mean(X, 0.0), X.mean(axis=0))


def test_multi_krum_matches_the_definition():
    n, f = 7, 2
    scores = []
    for i in range(n):
        d = sorted(float(np.sum((X[i] - X[j]) ** 2)) for j in range(n) if j != i)
        scores.append(sum(d[: n - f - 2]))
    assert np.allclose(rules.krum_scores(X, f), scores)
    keep = sorted(np.argsort(scores)[:3])
    est, kept = rules.multi_krum(X, W, f, select=3)
    assert list(kept) == keep and 2 not in keep
    assert np.allclose(est, sum(W[i] * X[i] for i in keep) / sum(W[i] for i in keep))
    with pytest.raises(ValueError, match="n > f \\+ 2"):
        rules.krum_scores(X[:4], 2)


def test_norm_bound_clips_each_row_then_weights():
    b = 1.5
    clipped = [x * min(1.0, b / np.linalg.norm(x)) for x in X]
    want = sum(w * c for w, c in zip(W, clipped)) / W.sum()
    assert np.allclose(rules.norm_bound(X, W, b), want)
    noise = np.arange(5.0)
    assert np.allclose(rules.norm_bound(X, W, b, noise), want + noise)


def _stacked(control: bool) -> StackedUpdates:
    return StackedUpdates(X, X[:, ::-1].copy() if control else None, W, tuple(f"p{i}" for i in range(7)))


@pytest.mark.parametrize("name", ["fedavg", "fedavgm", "fedprox", "fedadam", "fedyogi", "fedadagrad", "scaffold"])
@pytest.mark.parametrize("rule", ["median", "trimmed_mean", "multi_krum", "norm_bound"])
def test_every_optimiser_gets_the_robust_mean_through_an_aggregate(name, rule):
    scaffold = name == "scaffold"
    cfg = RobustConfig(rule=rule, trim_fraction=0.2, krum_byzantine=2, norm=1.0, noise_std=0.1)
    vsum = robust_sum(_stacked(scaffold), cfg, np.random.default_rng(0))
    layout = FlatLayout.of({"a": torch.zeros(5)})
    agg = to_aggregate(vsum, layout)
    again = robust_sum(_stacked(scaffold), cfg, np.random.default_rng(0))
    assert np.array_equal(vsum.delta_sum, again.delta_sum)  # pure given the rng
    est = {"median": rules.median(X), "trimmed_mean": rules.trimmed_mean(X, 0.2),
           "multi_krum": rules.multi_krum(X, W, 2)[0],
           "norm_bound": rules.norm_bound(X, W, 1.0, np.random.default_rng(0).normal(0, 0.1, 5))}[rule]
    assert np.allclose(agg.mean_delta()["a"].numpy(), est, atol=1e-6)
    alg = algorithms.create(AlgorithmConfig(name=name), 7)
    state = alg.init_server({"a": torch.zeros(5)})
    new = alg.server_update(state, agg)
    assert torch.all(torch.isfinite(new.params["a"])) and not torch.equal(new.params["a"], state.params["a"])
    if scaffold:
        assert agg.control_delta_sum is not None


def test_robust_round_under_plain_keeps_rows_only_there():
    ids = ("a", "b", "c", "d")
    ctx = RoundContext("r", 0, ids, 5, False, 10)
    inputs = {p: PartyInput(X[i].astype(np.float32), None, float(W[i])) for i, p in enumerate(ids)}
    plain = registry.create("plain")
    vsum, _ = run_robust_round(plain, ctx, inputs, *plain.provision(ids), RobustConfig(rule="median"), 0)
    assert np.allclose(vsum.delta_sum / vsum.total_weight, np.median(X[:4].astype(np.float32), axis=0))
    assert vsum.total_weight == W[:4].sum()
    secagg = registry.create("secagg")
    with pytest.raises(ValueError, match="needs the plain protocol"):
        run_robust_round(secagg, ctx, inputs, None, {}, RobustConfig(rule="median"), 0)


@pytest.mark.parametrize("protocol", ["secagg", "he"])
def test_robust_rule_with_secure_aggregation_is_refused_in_one_line(protocol):
    with pytest.raises(ConfigError) as e:
        load_config(None, [f'aggregation.protocol="{protocol}"', 'aggregation.robust.rule="multi_krum"'])
    assert "never shows the server one party's update" in str(e.value) and "\n" not in str(e.value)


def test_multi_krum_with_too_few_parties_is_refused_or_aborts_the_round():
    with pytest.raises(ConfigError, match="more than f \\+ 2"):
        load_config(None, ["parties=4", 'aggregation.robust.rule="multi_krum"', "aggregation.robust.krum_byzantine=2"])
    ids = ("a", "b", "c", "d")
    ctx = RoundContext("r", 0, ids, 5, False, 10)
    inputs = {p: PartyInput(X[i].astype(np.float32), None, float(W[i])) for i, p in enumerate(ids)}
    plain = registry.create("plain")
    with pytest.raises(ProtocolAbort, match="robust rule multi_krum"):  # a round that lost parties
        run_robust_round(plain, ctx, inputs, *plain.provision(ids), RobustConfig(rule="multi_krum",
                                                                                  krum_byzantine=2), 0)


def test_the_plain_sum_not_the_robust_estimate_is_checked_against_the_clip():
    """Three honest rows of norm 1 whose coordinate-wise median has norm sqrt(3/2): accepted (their
    sum is within 3 x 1); a row past the clip makes the sum impossible: rejected before the rule."""
    ids, k = ("a", "b", "c"), 4
    rows = np.zeros((3, 3 * k), np.float32)
    for i, (s, t) in enumerate([(0, 1), (1, 2), (0, 2)]):  # each row on two of three blocks of k coordinates
        rows[i, s * k:(s + 1) * k] = rows[i, t * k:(t + 1) * k] = 1 / np.sqrt(2 * k)
    ctx = RoundContext("r", 0, ids, 3 * k, False, 10)
    plain = registry.create("plain")
    bound = InputBound(norm=1.0)
    inputs = {p: PartyInput(rows[i], None, 1.0) for i, p in enumerate(ids)}
    vsum, _ = run_robust_round(plain, ctx, inputs, *plain.provision(ids), RobustConfig(rule="median"), 0, bound)
    assert np.linalg.norm(vsum.delta_sum / vsum.total_weight) == pytest.approx(np.sqrt(1.5), rel=1e-5)
    inputs["c"] = PartyInput(rows[2] * 5, None, 1.0)
    with pytest.raises(SumOutOfRange, match=r"\|\|delta\|\|_2"):
        run_robust_round(plain, ctx, inputs, *plain.provision(ids), RobustConfig(rule="median"), 0, bound)
