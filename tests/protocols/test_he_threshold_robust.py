"""Threshold `he`: silent decryptors are replaced, a restarted round finishes, and the party's round
ledger survives a restart and bounds what it does. (A decryptor answering garbage:
tests/adversarial/test_he_garbage_decryptor.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from securefed.protocols.base import PartyInput, ProtocolAbort, ProtocolError, RoundContext, RoundSpent
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
    dither = led.pin_input(2, b"m" * 32, b"\x01" * 32)
    again = ThresholdLedger(path, max_rounds=5)  # a restarted party
    assert again.pin_input(2, b"m" * 32, b"\x02" * 32) == dither  # the same input: the same dither
    with pytest.raises(ProtocolError):
        again.pin_input(2, b"m'" + b"m" * 30, b"\x02" * 32)  # one input per round, across restarts
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
    assert again.pin_input(3, b"m'" + b"m" * 30, b"\x03" * 32) == b"\x03" * 32
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


def _attempt(he, public, mats, attempt: int, drop_at: dict[str, str] | None = None, round_: int = 0):
    ctx = RoundContext("fed", round_, ("a", "b", "c", "d", "e"), M, False, 8, attempt)
    return run_round(he, ctx, _inputs(ctx, 3), public, mats, drop_at=drop_at)[0]


@pytest.mark.parametrize("drop_at, reason", [
    ({"c": SIGN_STAGE, "d": SIGN_STAGE}, "quorum needs 4"),  # 2 signatures of C = {a, b, c, d}
    ({"b": DECRYPT_STAGE, "c": DECRYPT_STAGE}, "t=3"),  # a's and d's answers for C have left
])
def test_an_attempt_failed_after_signing_is_retried_with_the_same_contributor_set(drop_at, reason):
    """e is out of attempt 0 (its upload is missing), which fails after C = {a, b, c, d} was put up for
    signature. v1: the retry put up C' = {a, ..., e} (e uploaded this time); every party that had
    signed C refused it (one C per round: threat-model.md), and so did every further retry, until the
    coordinator stopped the federation. Now the retry puts up C again: e's upload is left out."""
    he = HE(HEConfig())  # t = 3, quorum 4
    public, mats = he.provision(("a", "b", "c", "d", "e"))
    with pytest.raises(ProtocolAbort, match=reason) as e:
        _attempt(he, public, mats, 0, {"e": INPUT_STAGE, **drop_at})
    assert not isinstance(e.value, RoundSpent)  # nothing was decrypted: one retry with C may finish it
    result = _attempt(he, public, mats, 1)
    assert result.contributors == ("a", "b", "c", "d")
    ctx = RoundContext("fed", 0, ("a", "b", "c", "d", "e"), M, False, 8)
    inputs = _inputs(ctx, 3)
    want = sum(inputs[p].delta.astype(np.float64) * inputs[p].weight for p in result.contributors)
    assert np.max(np.abs(result.delta_sum - want)) <= result.stats["error_bound"]["delta_sum"]
    assert _attempt(he, public, mats, 0, round_=1).contributors == ("a", "b", "c", "d", "e")  # next round: fresh


def test_a_retry_that_cannot_decrypt_the_signed_set_spends_the_round():
    """The signed C can only be decrypted with every member's upload again; a member missing in the
    retry, or the retry failing too, spends the round (RoundSpent: the coordinator skips it) instead
    of burning every attempt."""
    he = HE(HEConfig())
    public, mats = he.provision(("a", "b", "c", "d", "e"))
    with pytest.raises(ProtocolAbort):
        _attempt(he, public, mats, 0, {"e": INPUT_STAGE, "c": SIGN_STAGE, "d": SIGN_STAGE})
    with pytest.raises(RoundSpent, match="did not upload again"):
        _attempt(he, public, mats, 1, {"d": INPUT_STAGE})  # d is part of C and missing
    with pytest.raises(ProtocolAbort) as e:
        _attempt(he, public, mats, 0, {"a": SIGN_STAGE, "b": SIGN_STAGE}, round_=1)
    assert not isinstance(e.value, RoundSpent)
    with pytest.raises(RoundSpent, match="retry"):
        _attempt(he, public, mats, 1, {"a": SIGN_STAGE, "b": SIGN_STAGE}, round_=1)  # C fails a second time
    assert _attempt(he, public, mats, 0, round_=2).contributors == ("a", "b", "c", "d", "e")


def test_fewer_live_parties_than_a_quorum_put_up_no_set():
    """Two of five silent at upload: three parties are left, below the quorum of four, so no set could
    gather its signatures; the server puts none up (v1 did, and the set three parties had signed then
    blocked every retry of the round). The retry is free to decrypt whoever uploads then."""
    he = HE(HEConfig())
    public, mats = he.provision(("a", "b", "c", "d", "e"))
    with pytest.raises(ProtocolAbort, match="quorum of 4") as e:
        _attempt(he, public, mats, 0, {"d": INPUT_STAGE, "e": INPUT_STAGE})
    assert not isinstance(e.value, RoundSpent) and 0 not in he.proposed
    assert _attempt(he, public, mats, 1).contributors == ("a", "b", "c", "d", "e")
