"""End to end through `simulate` (needs the integration edits in config.py / world.py / runner.py;
skipped until `privacy` is a field of RootConfig)."""

from __future__ import annotations

import json

import pytest

from securefed.config import RootConfig, load_config

pytestmark = pytest.mark.skipif("privacy" not in RootConfig.model_fields, reason="privacy integration not applied")


def _run(tmp_path, overrides):
    from securefed.simulation.runner import simulate

    simulate(load_config(None, overrides), tmp_path / "run")
    return [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]


def test_example_level_dp_sgd_in_simulation(tmp_path, small_overrides):
    rows = _run(tmp_path, small_overrides + ["privacy.mechanism=example", "privacy.noise_multiplier=1.0",
                                             "privacy.target_epsilon=1000.0"])
    assert [r["selected"] for r in rows] == [3, 3]
    e1, e2 = rows[0]["dp_epsilon"], rows[1]["dp_epsilon"]
    assert all(0 < e1[p] < e2[p] for p in e1)  # composed across rounds, per party


def test_user_distributed_with_secagg_and_budget_stop(tmp_path, small_overrides):
    rows = _run(tmp_path, small_overrides + [
        "aggregation.protocol=secagg", "privacy.mechanism=user-distributed", "privacy.noise_multiplier=0.5",
        "privacy.target_epsilon=15.0", "privacy.update_clip_norm=0.05"])
    assert rows[0]["selected"] == 3 and rows[0]["protocol_clipped_fraction"] == 0.0
    assert rows[0]["protocol_dp_noise_std"] > 0
    # The budget check charges the worst case secagg still releases (2 of 3 survive: z_eff = 0.41, eps 13.8 <= 15);
    # all three contribute (z = 0.5, eps ~10.7); round 2's worst case (~19) would exceed 15, so all stop
    assert rows[1]["selected"] == 0 and sorted(rows[1]["dp_stopped"]) == ["party-00", "party-01", "party-02"]


def test_config_error_names_privacy_field():
    from securefed.errors import ConfigError

    with pytest.raises(ConfigError, match="privacy.target_epsilon"):
        load_config(None, ["privacy.target_epsilon=-1"])
    with pytest.raises(ConfigError, match="aggregation.secagg.clip"):
        load_config(None, ["aggregation.protocol=secagg", "aggregation.secagg.clip=0.3",
                           "privacy.mechanism=user-distributed", "privacy.noise_multiplier=1"])


def test_amplified_user_central_charges_every_party_every_round(tmp_path, small_overrides):
    """Secret Poisson selection through the real runner: each round every party is charged at q = 2/6,
    drawn or not; rows of an empty draw still carry the spends (a noise-only step was released)."""
    overrides = [o for o in small_overrides if not o.startswith("parties=")]
    rows = _run(tmp_path, overrides + ["parties=6", "rounds=3", "sampling.count=2", "privacy.mechanism=user-central",
                                       "privacy.target_epsilon=4.0", "privacy.sampling_amplification=true"])
    for row in rows:
        assert sorted(row["dp_spends"]) == [f"party-{i:02d}" for i in range(6)]
        assert all(v[1] == pytest.approx(1 / 3) for v in row["dp_spends"].values())
        assert row["dp_drawn"] == 6
    eps = rows[-1]["dp_epsilon"]
    assert len(set(eps.values())) == 1 and 3.9 < eps["party-00"] <= 4.0  # z solved for q over all 3 rounds
