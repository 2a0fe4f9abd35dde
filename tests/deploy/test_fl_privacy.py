"""Differential privacy in a deployment, with the real FL apps driven in process: each side holds only
its part of the mechanism (deploy/fl_privacy.py), accounts what it can see, and draws noise from the
CSPRNG whatever the config says."""

from __future__ import annotations

import json

import numpy as np
import pytest

from _fl_helpers import PARTIES, InProcessFederation, fl_overrides, provision_fl, write_party_data
from securefed.aggregate import FlatLayout
from securefed.deploy.apps import RoundDeclined
from securefed.deploy.fl_apps import FLServerApp
from securefed.deploy.settings import load_federation
from securefed.errors import ConfigError
from securefed.privacy.accounting import Spend, epsilon, example_sample_rate
from securefed.privacy.user_level import clip_l2
from securefed.protocols.base import ProtocolAbort

Z = 1.0
DELTA = 1e-5


def _federation(tmp_path, small_overrides, *extra):
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = write_party_data(tmp_path)
    fed_dir = tmp_path / "fed"
    provision_fl(fed_dir, fl_overrides(small_overrides, *extra))
    return InProcessFederation(fed_dir, data, tmp_path / "state"), data


def test_example_dp_party_accounts_its_budget_and_declines_past_it(tmp_path, small_overrides):
    # 60 records per party, batch 4, 2 steps per round: the target allows two rounds but not three.
    q, steps = example_sample_rate(4, 60), 2
    eps2 = epsilon([Spend(Z, q, steps)] * 2, DELTA)
    eps3 = epsilon([Spend(Z, q, steps)] * 3, DELTA)
    fed, _ = _federation(tmp_path, small_overrides, "rounds=3", "privacy.mechanism=example",
                         f"privacy.noise_multiplier={Z}", f"privacy.target_epsilon={(eps2 + eps3) / 2}")
    assert all(c.cfg.privacy.secure_mode for c in fed.clients.values())  # forced on in a deployment
    for r in range(2):
        metrics, declined = fed.run_round(r)
        assert declined == () and metrics["contributors"] == 3
        assert "dp_epsilon" not in metrics  # example-level spends are the parties' own business
    for pid in PARTIES:
        rows = json.loads((tmp_path / "state" / pid / "state" / "privacy.json").read_text())
        assert [r["round"] for r in rows] == [0, 1]
        assert rows[-1]["dp_epsilon"] == {pid: pytest.approx(eps2)}
    # Round 3 would pass the target: every party declines it, before training; so does a restarted party.
    selected = fed.server.select(2, PARTIES)
    ctx, payload = fed.server.round_context(2, selected), fed.server.global_payload(2)
    for pid in PARTIES:
        with pytest.raises(RoundDeclined, match="target_epsilon"):
            fed.clients[pid].local_update(2, payload, ctx)
    restarted = fed.client(PARTIES[0])
    assert restarted.privacy.epsilon() == pytest.approx(eps2)
    with pytest.raises(RoundDeclined):
        restarted.local_update(2, payload, ctx)


def test_example_dp_noise_is_not_reproducible_from_the_config(tmp_path, small_overrides):
    # Without DP a party's round is a function of the public config (seeded), so two parties with the
    # same data compute the same update; with DP the noise and Poisson samples come from the CSPRNG.
    def two_updates(sub, *extra):
        fed, _ = _federation(tmp_path / sub, small_overrides, "rounds=1", *extra)
        ctx, payload = fed.server.round_context(0, PARTIES), fed.server.global_payload(0)
        twin = fed.client(PARTIES[0], tmp_path / sub / "twin")
        return [c.local_update(0, payload, ctx).delta for c in (fed.clients[PARTIES[0]], twin)]

    a, b = two_updates("plain")
    np.testing.assert_array_equal(a, b)
    a, b = two_updates("dp", "privacy.mechanism=example", f"privacy.noise_multiplier={Z}")
    assert not np.allclose(a, b)


def test_unreadable_ledger_refuses_to_start(tmp_path, small_overrides):
    fed, _ = _federation(tmp_path, small_overrides, "rounds=1", "privacy.mechanism=example",
                         f"privacy.noise_multiplier={Z}")
    (tmp_path / "state" / PARTIES[0] / "state").mkdir(parents=True, exist_ok=True)
    (tmp_path / "state" / PARTIES[0] / "state" / "privacy.json").write_text("{truncated")
    with pytest.raises(ConfigError, match="privacy ledger"):
        fed.client(PARTIES[0])


def _clipped_sum(tmp_path, small_overrides, clip):
    """Each party's round-0 update (training is seeded, so identical under user-level DP), clipped."""
    fed, _ = _federation(tmp_path / "ref", small_overrides, "rounds=1", "evaluation.party_metrics=off")  # as under DP
    ctx, payload = fed.server.round_context(0, PARTIES), fed.server.global_payload(0)
    return sum(clip_l2(fed.clients[p].local_update(0, payload, ctx).delta, clip)[0] for p in PARTIES)


@pytest.mark.parametrize("mechanism, protocol", [("user-central", "plain"), ("user-distributed", "secagg")])
def test_user_level_dp_sum_carries_the_promised_noise(tmp_path, small_overrides, mechanism, protocol):
    clip = 0.1
    expected = _clipped_sum(tmp_path, small_overrides, clip)
    fed, _ = _federation(tmp_path / "dp", small_overrides, "rounds=1", f"aggregation.protocol={protocol}",
                         f"privacy.mechanism={mechanism}", f"privacy.noise_multiplier={Z}",
                         f"privacy.update_clip_norm={clip}")
    layout = FlatLayout.of(fed.server.state.params)
    before = layout.flatten(fed.server.state.params).astype(np.float64)
    metrics, _ = fed.run_round(0)
    # FedAvg with server lr 1 and weight 1 per party: new = old + noised_sum / 3.
    noised_sum = (layout.flatten(fed.server.state.params).astype(np.float64) - before) * 3
    noise = noised_sum - expected
    promised = metrics["dp_noise_std"]  # distributed: z times the sensitivity gamma*B >= clip
    assert promised == pytest.approx(Z * clip) if mechanism == "user-central" else promised >= Z * clip
    # thousands of coordinates: the sample std is within a few percent of the promised one
    assert abs(noise.std() / promised - 1) < 0.1, (noise.std(), promised)
    assert abs(noise.mean()) < 4 * promised / np.sqrt(noise.size)
    assert np.linalg.norm(expected) > 0
    # the server accounted every contributor, and a restarted server keeps the ledger
    assert metrics["dp_epsilon"] == {p: pytest.approx(metrics["dp_epsilon_max"]) for p in PARTIES}
    if mechanism == "user-central":
        assert metrics["dp_epsilon_max"] == pytest.approx(epsilon([Spend(Z, 1.0, 1)], DELTA))
    restarted = FLServerApp(fed.fed)
    restarted.load_state(fed.server.state_bytes())
    assert restarted.privacy.engine.epsilon_of(PARTIES[0]) == pytest.approx(metrics["dp_epsilon_max"])


def test_server_refuses_a_round_when_every_user_level_budget_is_spent(tmp_path, small_overrides):
    # One round of user-central noise z=1 costs more than this target: nobody may take part, and the
    # coordinator gets a ProtocolAbort (the attempt aborts and is retried/failed, the server lives).
    one_round = epsilon([Spend(Z, 1.0, 1)], DELTA)
    fed_dir = tmp_path / "fed"
    provision_fl(fed_dir, fl_overrides(small_overrides, "rounds=1", "privacy.mechanism=user-central",
                                       f"privacy.noise_multiplier={Z}", f"privacy.target_epsilon={one_round / 2}"))
    server = FLServerApp(load_federation(fed_dir / "server" / "federation.json"))
    with pytest.raises(ProtocolAbort, match="budget is spent"):
        server.select(0, PARTIES)
