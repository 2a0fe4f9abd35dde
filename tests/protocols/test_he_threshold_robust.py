"""Threshold `he`: one malicious decryptor cannot stop the federation (it is found and left out,
the round finishes), and the party's round ledger survives a restart and bounds what it does."""

from __future__ import annotations

import numpy as np
import pytest

from securefed.protocols.base import Message, PartyInput, ProtocolAbort, ProtocolError, RoundContext
from securefed.protocols.driver import run_round
from securefed.protocols.he import HE, HEConfig, framing
from securefed.protocols.he.threshold import layout as tl
from securefed.protocols.he.threshold import scheme
from securefed.protocols.he.threshold.ledger import ThresholdLedger
from securefed.protocols.he.threshold.party import DECRYPT_STAGE, INPUT_STAGE, SIGN_STAGE

M = 300


def _inputs(ctx: RoundContext, seed: int) -> dict[str, PartyInput]:
    rng = np.random.default_rng(seed)
    return {p: PartyInput((rng.standard_normal(M) * 0.1).astype(np.float32), None, float(rng.integers(1, 9)))
            for p in ctx.party_ids}


class GarbageDecryptor:
    """The real protocol, except that party `culprit` answers every decryption with well-formed
    garbage (uniform residues of the right size)."""

    def __init__(self, he: HE, culprit: str, seed: int = 0) -> None:
        self.he, self.culprit, self.name = he, culprit, he.name
        self.rng = np.random.default_rng(seed)

    def server(self, ctx, material):
        return self.he.server(ctx, material)

    def party(self, ctx, pid, data, material):
        session = self.he.party(ctx, pid, data, material)
        if pid != self.culprit:
            return session
        outer = self

        class Liar:
            def handle(self, msg: Message) -> Message | None:
                reply = session.handle(msg)
                if msg.stage != DECRYPT_STAGE:
                    return reply
                lay = session.layout
                head = framing.header(tl.KIND_ANSWER, session.public.key_id, ctx.round)
                p = np.array(lay.ring.primes, dtype=np.uint64).reshape(-1, 1)
                junk = outer.rng.integers(0, 2**31, (lay.n_ct, lay.ring.size, lay.ring.n), dtype=np.uint64) % p
                return Message(DECRYPT_STAGE, head + lay.pack(junk))

        return Liar()


def test_one_garbage_decryptor_every_round_ten_parties_ten_rounds():
    """The issue's figure at toy vector size: 10 parties, one answering garbage every round."""
    ids = tuple(f"p{i}" for i in range(10))
    he = HE(HEConfig())
    public, mats = he.provision(ids)
    culprit = "p2"  # among the first t + 1 signers, so round 0 does meet its garbage
    proto = GarbageDecryptor(he, culprit)
    done, excluded, asked = 0, [], []
    for r in range(10):
        ctx = RoundContext("fed", r, ids, M, False, 8)
        inputs = _inputs(ctx, r)
        try:
            result, traffic = run_round(proto, ctx, inputs, public, mats)
        except ProtocolAbort:
            continue
        d = sum(inputs[p].weight * inputs[p].delta.astype(np.float64) for p in ids)
        assert np.max(np.abs(result.delta_sum - d)) <= result.stats["error_bound"]["delta_sum"]
        done += 1
        excluded.append(result.stats["excluded"])
        asked.append(traffic.stages.count(DECRYPT_STAGE))
    assert done >= 9
    assert excluded[0] == (culprit,) and he.suspects == [culprit]
    # once suspected it is asked last: later rounds need a single decryptor set
    assert all(e == () for e in excluded[1:]) and set(asked[1:]) == {1}
    assert asked[0] > 1


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


def test_a_liar_and_a_party_that_falls_silent_mid_search():
    """p1 answers garbage; p3 answers the first set, then falls silent: the sets still to try are
    topped up from the other signers and the round finishes without p1."""
    ids = tuple(f"p{i}" for i in range(6))  # t = 4, quorum 5, first set p0..p4
    he = HE(HEConfig())
    public, mats = he.provision(ids)
    liar = GarbageDecryptor(he, "p1")

    class FlakyThenLiar:
        name = he.name

        def server(self, ctx, material):
            return liar.server(ctx, material)

        def party(self, ctx, pid, data, material):
            session = liar.party(ctx, pid, data, material)
            if pid != "p3":
                return session
            asked = []

            class Flaky:
                def handle(self, msg):
                    if msg.stage == DECRYPT_STAGE:
                        asked.append(1)
                        if len(asked) > 1:
                            raise ProtocolError("gone")
                    return session.handle(msg)
            return Flaky()

    ctx = RoundContext("fed", 0, ids, M, False, 8)
    inputs = _inputs(ctx, 4)
    result, traffic = run_round(FlakyThenLiar(), ctx, inputs, public, mats)
    assert result.stats["excluded"] == ("p1",) and not {"p1", "p3"} & set(result.stats["decryptors"])
    d = sum(inputs[p].weight * inputs[p].delta.astype(np.float64) for p in ids)
    assert np.max(np.abs(result.delta_sum - d)) <= result.stats["error_bound"]["delta_sum"]
