"""One malicious party against a threshold-`he` federation driven by the real coordinator (gRPC/mTLS
on loopback, threads of this process): it answers every decryption with well-formed garbage. v1: the
round aborted at decode, its retries found every party's round spent, and the federation stopped
with RoundFailed. Now the coordinator's server session leaves the liar out, every round finishes,
and the metrics line names it."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from _deploy_helpers import expected_sums, metrics, provision, run_inprocess, server_state
from _he_harness import garbage_answer
from securefed.protocols.base import Message
from securefed.protocols.he.threshold.party import DECRYPT_STAGE

PARTIES = ("p0", "p1", "p2", "p3")  # t = 3, quorum 4: the first decryptor set is all four


def _garbage_answers(ctx, pid, session):
    rng = np.random.default_rng(ctx.round)

    class Liar:
        def handle(self, msg: Message) -> Message | None:
            reply = session.handle(msg)
            return garbage_answer(session, ctx.round, rng) if msg.stage == DECRYPT_STAGE else reply
    return Liar()


def test_a_garbage_decryptor_is_left_out_every_round_and_named(tmp_path, caplog) -> None:
    fed = provision(tmp_path / "fed", PARTIES, "he", rounds=3)
    with caplog.at_level(logging.WARNING, logger="securefed.deploy.coordinator"):
        results = run_inprocess(fed, hooks={"p2": _garbage_answers}, timeout=240.0)
    assert results["server"].rounds_completed == 3
    lines = metrics(fed)
    assert [m["status"] for m in lines] == ["ok", "ok", "ok"]
    assert all(m["excluded"] == ["p2"] for m in lines)  # every first set holds all four: p2 is in it
    assert "party_excluded" in caplog.text and "p2" in caplog.text
    want, weight = expected_sums(fed, {r: PARTIES for r in range(3)})
    state = server_state(fed)
    np.testing.assert_allclose(state["delta_sum"], want, rtol=1e-6, atol=1e-3)
    assert state["total_weight"] == pytest.approx(weight, rel=1e-6, abs=1e-3)
