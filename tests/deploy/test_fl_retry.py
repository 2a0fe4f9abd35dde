"""A retried attempt of a round in a deployment, with the real FL apps driven in process: the party
reuses the update it trained in the round's first attempt (same round, same global model), so
threshold `he` (one input per round, pinned in the party's ledger) accepts it again and example-level
DP is spent once. The update lives on disk beside the client state, so a party process restarted on
its own state folder sends it again. A party that trains again (here: restarted without its state
folder, what the in-memory cache of earlier versions did on every restart) brings a different noised
update, which its `he` ledger refuses: that party is out of the round's retries."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

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
    # A party restarted without its round's work trains again: fresh DP noise, another input; its
    # ledger refuses it, and the attempt aborts.
    lost = dict(fed.clients, **{PARTIES[1]: fed.client(PARTIES[1], tmp_path / "state-lost")})
    inputs, go = attempt(2, lost)
    assert not np.array_equal(inputs[PARTIES[1]].delta, first[PARTIES[1]].delta)
    with pytest.raises(ProtocolAbort):
        go()
    # Restarted on its own state folder, it sends its first input again; the ledger takes it.
    restarted = dict(fed.clients, **{PARTIES[1]: fed.client(PARTIES[1])})
    inputs, go = attempt(3, restarted)
    assert np.array_equal(inputs[PARTIES[1]].delta, first[PARTIES[1]].delta)
    assert restarted[PARTIES[1]].last_report == fed.clients[PARTIES[1]].last_report
    assert go()[0].contributors == PARTIES
    rows = json.loads((tmp_path / "state" / PARTIES[1] / "state" / "privacy.json").read_text())
    assert [r["round"] for r in rows] == [0]


def test_a_restarted_scaffold_party_moves_its_control_variate_once(tmp_path, small_overrides):
    data = write_party_data(tmp_path)
    provision_fl(tmp_path / "fed", fl_overrides(small_overrides, "rounds=2", "algorithm.name=scaffold"))
    fed = InProcessFederation(tmp_path / "fed", data, tmp_path / "state")
    pid = PARTIES[0]
    ctx, payload = fed.server.round_context(0, PARTIES), fed.server.global_payload(0)
    first = fed.clients[pid].local_update(0, payload, ctx)
    moved = {k: v.clone() for k, v in fed.clients[pid].state.control.items()}
    restarted = fed.client(pid)  # a new process on the same state folder, mid-round
    again = restarted.local_update(0, payload, dataclasses.replace(ctx, attempt=1))
    assert np.array_equal(first.delta, again.delta) and np.array_equal(first.control_delta, again.control_delta)
    assert all(torch.equal(restarted.state.control[k], v) for k, v in moved.items())  # not moved twice
    assert any(float(v.abs().max()) > 0 for v in moved.values())
    # The next round's payload is new work: the party trains, from the state it kept.
    fed.server.apply(0, run_round(fed.protocol, ctx, {p: (again if p == pid else fed.clients[p].local_update(0, payload, ctx))
                                                       for p in PARTIES}, fed.server_material, fed.party_material)[0])
    nxt = restarted.local_update(1, fed.server.global_payload(1), fed.server.round_context(1, PARTIES))
    assert not np.array_equal(nxt.delta, first.delta)
    assert any(not torch.equal(restarted.state.control[k], v) for k, v in moved.items())
