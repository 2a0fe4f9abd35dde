"""Threshold `he`: silent decryptors are replaced, a restarted round finishes, and the party's round
ledger survives a restart and bounds what it does. (A decryptor answering garbage:
tests/adversarial/test_he_garbage_decryptor.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from securefed.protocols.base import PartyInput, ProtocolError, RoundContext
from securefed.protocols.driver import run_round
from securefed.protocols.he import HE, HEConfig
from securefed.protocols.he.threshold import scheme
from securefed.protocols.he.threshold.ledger import ThresholdLedger
from securefed.protocols.he.threshold.party import DECRYPT_STAGE, INPUT_STAGE, SIGN_STAGE

M = 300


def _inputs(ctx: RoundContext, seed: int) -> dict[str, PartyInput]:
    rng = np.random.default_rng(seed)
    return {p: PartyInput((rng.standard_normal(M) * 0.1).astype(np.float32), None, float(rng.integers(1, 9)))
            for p in ctx.party_ids}


def test_a_silent_decryptor_is_replaced():
    ids = ("a", "b", "c", "d", "e")
    he = HE(HEConfig())  # t = 3, quorum 4
    public, mats = he.provision(ids)
    ctx = RoundContext("fed", 0, ids, M, False, 8)
    result, traffic = run_round(he, ctx, _inputs(ctx, 1), public, mats, drop_at={"a": DECRYPT_STAGE, "b": DECRYPT_STAGE})
    assert set(result.stats["decryptors"]) == {"c", "d", "e"} and traffic.stages.count(DECRYPT_STAGE) == 2


def test_ledger_on_disk_survives_a_restart_and_bounds_the_round(tmp_path):
    path = tmp_path / "he-threshold-rounds.json"
    led = ThresholdLedger(path, max_rounds=5)
    led.begin(2)
    led.claim_encryption(2, b"tau-1")
    with pytest.raises(ProtocolError):
        led.claim_encryption(2, b"tau-1")  # never two uploads under one a_tau
    led.claim_signature(2, b"C")
    led.claim_answer(2, b"C", limit=2)
    again = ThresholdLedger(path, max_rounds=5)  # a restarted party
    with pytest.raises(ProtocolError):
        again.claim_encryption(2, b"tau-1")
    with pytest.raises(ProtocolError):
        again.claim_signature(2, b"C'")  # one contributor set per round
    again.claim_signature(2, b"C")  # the same one again: allowed
    with pytest.raises(ProtocolError):
        again.claim_answer(2, b"C'", limit=2)
    again.claim_answer(2, b"C", limit=2)
    with pytest.raises(ProtocolError):
        again.claim_answer(2, b"C", limit=2)  # the answer budget is spent
    with pytest.raises(ProtocolError):
        again.begin(1)  # no rounds backwards
    with pytest.raises(ProtocolError):
        again.begin(5)  # nor past the configured rounds
    again.begin(3)
    again.claim_signature(3, b"C'")  # a new round starts clean
    assert scheme.answers_per_round(10) >= 10 + 1  # a first set and every leave-one-out set


def test_a_restarted_round_gets_a_fresh_nonce_and_finishes():
    """A coordinator killed mid-round restarts the round at attempt 0: a fresh server nonce names a
    fresh a_tau, so the parties (whose ledgers remember the first upload) encrypt again."""
    ids = ("a", "b", "c")
    he = HE(HEConfig(threshold_fraction=0.0))  # t = 2
    public, mats = he.provision(ids)
    ctx = RoundContext("fed", 0, ids, M, False, 8)
    inputs = _inputs(ctx, 2)
    server = he.server(ctx, public)
    sessions = {p: he.party(ctx, p, inputs[p], mats[p]) for p in ids}
    for p, m in server.start().items():
        sessions[p].handle(m)  # uploads, then the coordinator dies
    result, traffic = run_round(he, ctx, inputs, public, mats)
    assert traffic.stages[:2] == [INPUT_STAGE, SIGN_STAGE] and result.contributors == ids
