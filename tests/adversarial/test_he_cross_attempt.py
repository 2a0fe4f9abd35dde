"""Threshold `he`: cross-attempt differencing. The server retries a round (attempt 1: a fresh nonce,
so a fresh a_tau) and gets the same contributor set C decrypted twice. If the target honest party's
input changed between the attempts (the server handed it another global model, or it retrained with
fresh randomness) while the colluders repeat theirs, the two sums differ by the target's change
m_a - m_a' (plus stochastic-rounding coins of the others): the server isolates one party's update
difference. The party pins its round's input (ledger: SHA-256 of the input and the dither seed of
its first upload) and refuses another; the same input again re-encodes to the same integers.

The other way round: the same inputs, another contributor set. The server decrypts C in attempt 0,
calls the attempt failed, and in attempt 1 decrypts C' = C without the target: the difference is the
target's input, exactly (the pinned dither makes both sums the same integers). A party signs one C
per round (ledger), so C' never gets a quorum; that is also why a failed attempt's retry must put up
C again or spend the round (threshold/server.py), never another set.
"""

from __future__ import annotations

import numpy as np
import pytest

from _he_harness import IDS, M, Session, federation, refuses
from securefed.protocols.base import PartyInput, ProtocolError
from securefed.protocols.he.threshold import layout as tl
from securefed.protocols.he.threshold.ledger import ThresholdLedger

COLLUDERS = ("d", "e")  # t - 1 = 2
DECRYPTORS = ("a", "b", "d")


@pytest.fixture(scope="module")
def fed():
    return federation()


def _inputs(seed: int) -> dict[str, PartyInput]:
    rng = np.random.default_rng(seed)
    return {p: PartyInput((rng.standard_normal(M) * 0.2).astype(np.float32), None, float(rng.integers(1, 17)))
            for p in IDS}


def _decrypt(s: Session, ids: tuple[str, ...] = IDS, decryptors: tuple[str, ...] = DECRYPTORS) -> np.ndarray:
    """One full attempt as the server runs it: uploads of C = `ids`, signed by all of C (the colluders
    run the party code too), one decryptor set.
    -> the decrypted sum's integers of the delta part, (M,) centered mod 2^bits."""
    c0 = {p: s.upload(p) for p in ids}
    sigs = {p: s.sign(p, ids) for p in ids}
    total = c0[ids[0]].copy()
    for p in ids[1:]:
        s.ring.add_to(total, c0[p])
    for p in decryptors:
        total = s.ring.sub(total, s.answer(p, s.decrypt_msg(ids, sigs, decryptors)))
    return _centered(s, s.digits(total)[:M])


def _centered(s: Session, v: np.ndarray) -> np.ndarray:
    half = 1 << (s.lay.codec.bits - 1)
    return (v.astype(np.int64) + half) % (2 * half) - half


def _units(s: Session, d: PartyInput) -> np.ndarray:
    return d.delta.astype(np.float64) * d.weight / s.lay.codec.step


@pytest.mark.parametrize("weakened", [True, False])
def test_two_attempts_with_a_changed_input_isolate_the_change(fed, weakened, monkeypatch):
    if weakened:  # the variant without the pin (test-only): fresh dither, any input in any attempt
        monkeypatch.setattr(ThresholdLedger, "pin_input", lambda self, round_, digest, fresh: fresh)
    round_ = 1 if weakened else 2
    first = _inputs(7)
    second = dict(first, a=_inputs(8)["a"])  # only the target's input changes; colluders repeat theirs
    v1 = _decrypt(Session(fed, round_, inputs=first, attempt=0, nonce=b"\x01" * tl.NONCE_LEN))
    s2 = Session(fed, round_, inputs=second, attempt=1, nonce=b"\x02" * tl.NONCE_LEN)
    truth = _units(s2, second["a"]) - _units(s2, first["a"])
    if weakened:
        got = _centered(s2, _decrypt(s2) - v1)  # V_C(tau1) - V_C(tau2)
        # Stochastic rounding moves a value by less than one unit (up or down). The 4 others repeat
        # their inputs, so each difference of their two roundings is -1, 0 or 1; the target's two
        # inputs differ, so its two roundings' difference lies in (-2, 2): off by less than 6 units.
        assert np.max(np.abs(got - truth)) < 6
        assert np.corrcoef(got, truth)[0, 1] > 0.999 and np.std(truth) > 100
    else:
        with pytest.raises(ProtocolError):
            s2.upload("a")  # another input this round: refused before anything is encrypted
        for p in IDS[1:]:
            s2.upload(p)  # the others' retry (same inputs) goes on


def test_an_honest_retry_with_the_same_input_decrypts_to_the_same_sum(fed):
    """Same inputs in both attempts: every party uploads again under the fresh a_tau, and the two
    decrypted sums are equal integer for integer (the dither is pinned), so two decryptions of the
    round reveal nothing that one does not."""
    inputs = _inputs(9)
    v1 = _decrypt(Session(fed, 3, inputs=inputs, attempt=0, nonce=b"\x03" * tl.NONCE_LEN))
    s2 = Session(fed, 3, inputs=inputs, attempt=1, nonce=b"\x04" * tl.NONCE_LEN)
    v2 = _decrypt(s2)
    assert np.array_equal(v1, v2)
    assert np.max(np.abs(v1 - sum(_units(s2, d) for d in inputs.values()))) < len(IDS)


@pytest.mark.parametrize("weakened", [True, False])
def test_a_retry_that_decrypts_another_contributor_set_isolates_one_input(fed, weakened, monkeypatch):
    if weakened:  # the variant that signs any set it is shown (test-only): it remembers the latest
        monkeypatch.setattr(ThresholdLedger, "claim_signature",
                            lambda self, round_, c_hash: setattr(self, "signed", c_hash.hex()))
    round_ = 4 if weakened else 5
    inputs = _inputs(11)
    v1 = _decrypt(Session(fed, round_, inputs=inputs, attempt=0, nonce=b"\x05" * tl.NONCE_LEN))  # C, then "failed"
    s2 = Session(fed, round_, inputs=inputs, attempt=1, nonce=b"\x06" * tl.NONCE_LEN)
    rest = IDS[1:]  # C' = C without the target a
    truth = _units(s2, inputs["a"])
    if weakened:
        got = _centered(s2, v1 - _decrypt(s2, rest, ("b", "c", "d")))
        assert np.max(np.abs(got - truth)) <= 1  # a's input to its rounding coin
        assert np.corrcoef(got, truth)[0, 1] > 0.9999 and np.std(truth) > 100
    else:
        for p in rest:
            s2.upload(p)  # the retry's uploads (same inputs) are fine
        for p in ("b", "c"):  # the honest members of C' signed C this round
            with pytest.raises(ProtocolError):
                s2.sign(p, rest)
        sigs = {p: s2.forged_sign(p, rest) for p in COLLUDERS}
        assert len(sigs) < tl.quorum(len(IDS), 3)
        assert refuses(s2.parties["b"], s2.decrypt_msg(rest, sigs, ("b", "d", "e")))
        assert s2.sign("b", IDS)  # C again: signed (the retry the server makes)
