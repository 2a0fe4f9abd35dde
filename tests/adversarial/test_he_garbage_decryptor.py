"""Threshold `he`: one malicious decryptor answering garbage cannot stop the federation: it is found
(leave-one-out decryptor sets), left out and named, and the round finishes (issue #21's figure at
toy vector size: 10 parties, one liar, 10 rounds)."""

from __future__ import annotations

import numpy as np

from _he_harness import garbage_answer
from securefed.protocols.base import Message, PartyInput, ProtocolAbort, ProtocolError, RoundContext
from securefed.protocols.driver import run_round
from securefed.protocols.he import HE, HEConfig
from securefed.protocols.he.threshold.party import DECRYPT_STAGE

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
                return garbage_answer(session, ctx.round, outer.rng) if msg.stage == DECRYPT_STAGE else reply

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
