"""The selection rules (securefed.membership.select_parties): sha256-rank against the committed
known answers of its specification, its properties, and the numpy-choice rule that runs and
federations from before rules had names keep."""

from __future__ import annotations

import json
from collections import Counter
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

from securefed.config import from_dict, load_config, stored
from securefed.simulation.checkpoint import check_same_run
from securefed.membership import LEGACY_RULE, SamplingConfig, derive_seed, select_parties

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "selection_sha256_rank.json").read_text())
IDS = tuple(f"party-{i:02d}" for i in range(10))


@pytest.mark.parametrize("v", VECTORS["vectors"], ids=lambda v: f"{len(v['parties'])}p-r{v['round']}-k{v['count']}")
def test_sha256_rank_matches_its_specification(v) -> None:
    got = select_parties(v["parties"], v["round"], v["seed"], v["count"], rule="sha256-rank")
    assert list(got) == v["invited"]


def test_sha256_rank_is_the_default_and_ignores_roster_order() -> None:
    assert SamplingConfig().rule == "sha256-rank" and from_dict({}).sampling.rule == "sha256-rank"
    for r in range(20):
        a = select_parties(IDS, r, 5, 3)
        assert a == select_parties(tuple(reversed(IDS)), r, 5, 3) == select_parties(sorted(IDS, key=hash), r, 5, 3)
        assert len(a) == 3 and a == tuple(sorted(a))


def test_sha256_rank_draws_every_subset_about_equally_often() -> None:
    # 3 of 6: 20 subsets; 4,000 draws give 200 each in expectation (sd ~14). Every subset between
    # 130 and 270 (5 sd) and a chi-square below its 99.9% point for 19 degrees of freedom (43.8).
    ids, draws = tuple("abcdef"), 4000
    seen = Counter(select_parties(ids, r, 11, 3) for r in range(draws))
    assert set(seen) == {tuple(c) for c in combinations(ids, 3)}
    assert all(130 <= n <= 270 for n in seen.values())
    assert sum((n - draws / 20) ** 2 / (draws / 20) for n in seen.values()) < 43.8


def test_numpy_choice_is_the_rule_runs_from_before_it_had_a_name_ran() -> None:
    # The earlier code, restated: a numpy Generator seeded by derive_seed(seed, "select", round).
    for r in range(10):
        rng = np.random.default_rng(derive_seed(3, "select", r))
        before = tuple(sorted(IDS[i] for i in rng.choice(10, size=3, replace=False)))
        assert select_parties(IDS, r, 3, 3, rule="numpy-choice") == before
    assert LEGACY_RULE == "numpy-choice"


def test_a_stored_config_without_a_rule_keeps_the_old_one(tmp_path) -> None:
    old = json.loads(from_dict({"sampling": {"count": 2}}).to_json())
    del old["sampling"]["rule"]  # as a run from before `sampling.rule` wrote it
    assert from_dict(stored(old)).sampling.rule == "numpy-choice"
    assert from_dict(stored({**old, "sampling": {**old["sampling"], "rule": "sha256-rank"}})).sampling.rule == \
        "sha256-rank"
    (tmp_path / "config.json").write_text(json.dumps(old))
    assert load_config(tmp_path / "config.json").sampling.rule == "numpy-choice"  # the JSON a run saved
    (tmp_path / "c.toml").write_text("[sampling]\ncount = 2\n")
    assert load_config(tmp_path / "c.toml").sampling.rule == "sha256-rank"  # a config written today
    assert SamplingConfig.from_stored({"count": 2}).rule == "numpy-choice"
    with pytest.raises(ValueError, match="SamplingConfig"):  # a malformed section: refused, not a TypeError
        SamplingConfig.from_stored([2])


def test_a_stored_config_keeps_old_behaviour_only_where_it_differed(tmp_path) -> None:
    """Without a draw the rule changes nothing, and without user-distributed DP the rotation changes
    nothing: there a stored config takes today's defaults, so an old run of that kind resumes."""
    now = from_dict({"parties": 3})
    old = json.loads(now.to_json())
    del old["sampling"]["rule"], old["privacy"]["rotation"]
    assert stored(old) == old and from_dict(stored(old)) == now
    check_same_run(old, now, tmp_path)  # no refusal
    dist = json.loads(from_dict({"parties": 3, "privacy": {"mechanism": "user-distributed", "noise_multiplier": 1.0},
                                 "aggregation": {"protocol": "secagg"}}).to_json())
    del dist["privacy"]["rotation"]
    assert from_dict(stored(dist)).privacy.rotation == "numpy"
