"""A retried attempt of a round in a deployment, with the real FL apps driven in process: the party
reuses the update it trained in the round's first attempt (same round, same global model), so
threshold `he` (one input per round, pinned in the party's ledger) accepts it again and example-level
DP is spent once. A party that trains again (a restart loses the cached update) brings a different
noised update, which its `he` ledger refuses: that party is out of the round's retries."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from _fl_helpers import PARTIES, InProcessFederation, fl_overrides, provision_fl, write_party_data
from securefed.protocols.base import ProtocolAbort
from securefed.protocols.driver import run_round
from securefed.protocols.he.threshold.party import SIGN_STAGE


def test_a_retried_he_round_reuses_the_update_and_spends_dp_once(tmp_path, small_overrides):
    data = write_party_data(tmp_path)
    provision_fl(tmp_path / "fed", fl_overrides(small_overrides, "rounds=1", "aggregation.protocol=he",
                                                "privacy.mechanism=example", "privacy.noise_multiplier=1.0",
                                                "privacy.target_epsilon=50"))
    fed = InProcessFederation(tmp_path / "fed", data, tmp_path / "state")
    assert fed.protocol.config.mode == "threshold"
    ctx, payload = fed.server.round_context(0, PARTIES), fed.server.global_payload(0)

    def attempt(n: int, clients, drop_at=None):
        c = dataclasses.replace(ctx, attempt=n)
        inputs = {p: clients[p].local_update(0, payload, c) for p in PARTIES}
        return inputs, lambda: run_round(fed.protocol, c, inputs, fed.server_material, fed.party_material, drop_at)

    first, go = attempt(0, fed.clients, {PARTIES[0]: SIGN_STAGE})
    with pytest.raises(ProtocolAbort):
        go()  # every party uploaded (and pinned its input); one falls silent: no quorum of 3 of 3
    again, go = attempt(1, fed.clients)
    assert all(np.array_equal(first[p].delta, again[p].delta) for p in PARTIES)  # not trained again
    vsum, _ = go()
    assert vsum.contributors == PARTIES
    for pid in PARTIES:  # the round's DP spend is recorded once
        rows = json.loads((tmp_path / "state" / pid / "state" / "privacy.json").read_text())
        assert [r["round"] for r in rows] == [0]
    # A restarted party trains again: fresh DP noise, another input; its ledger refuses it.
    restarted = dict(fed.clients, **{PARTIES[1]: fed.client(PARTIES[1], tmp_path / "state-restarted")})
    inputs, go = attempt(2, restarted)
    assert not np.array_equal(inputs[PARTIES[1]].delta, first[PARTIES[1]].delta)
    with pytest.raises(ProtocolAbort):
        go()
