"""Threshold `he` under the real coordinator (gRPC/mTLS on loopback, threads of this process): an
attempt that fails after its contributor set C went out for signature. v1: the retry put up the
set of whoever uploaded then; every party that had signed C refused it (one set per round: a second
would give the server the difference of two sums), so did every further retry, and the coordinator
stopped the federation (RoundFailed) - what benchmarks/churn.py hit at 30 processes. Now the retry
puts up C again and finishes; when it cannot (a member of C gone, or a party whose upload spoils
every decryption), the round is spent and skipped, and the federation goes on."""

from __future__ import annotations

import numpy as np
import pytest

from _deploy_helpers import expected_sums, metrics, provision, run_inprocess, server_state
from _he_harness import garbage_answer
from securefed.protocols.base import Message, ProtocolError
from securefed.protocols.he.threshold.party import INPUT_STAGE, SIGN_STAGE

PARTIES = ("p0", "p1", "p2", "p3", "p4")  # t = 3, quorum 4


def _silent_at(stage: str):
    """A session hook: in round 0's first attempt the party drops out at `stage` (as a killed one)."""
    def hook(ctx, pid, session):
        class Dies:
            def handle(self, msg: Message) -> Message | None:
                if ctx.round == 0 and ctx.attempt == 0 and msg.stage == stage:
                    raise ProtocolError("gone")
                return session.handle(msg)
        return Dies()
    return hook


def _garbage_upload(ctx, pid, session):
    rng = np.random.default_rng(ctx.attempt)

    class Spoiler:
        def handle(self, msg: Message) -> Message | None:
            reply = session.handle(msg)
            if msg.stage == INPUT_STAGE and ctx.round == 0:
                return garbage_answer(session, ctx.round, rng, INPUT_STAGE)
            return reply
    return Spoiler()


def _check_sums(fed, rounds, drop_at=None) -> None:
    want, weight = expected_sums(fed, rounds, drop_at)
    state = server_state(fed)
    np.testing.assert_allclose(state["delta_sum"], want, rtol=1e-6, atol=1e-3)
    assert state["total_weight"] == pytest.approx(weight, rel=1e-6, abs=1e-3)


def test_a_round_that_lost_its_signing_quorum_is_retried_with_the_same_set(tmp_path) -> None:
    """p4 misses the upload, p2 and p3 the signing: C = {p0..p3} has 2 of the 4 signatures it needs.
    The retry (all five back) decrypts C, not C plus p4."""
    fed = provision(tmp_path / "fed", PARTIES, "he", max_round_retries=2)
    hooks = {"p4": _silent_at(INPUT_STAGE), "p2": _silent_at(SIGN_STAGE), "p3": _silent_at(SIGN_STAGE)}
    results = run_inprocess(fed, hooks=hooks, timeout=240.0)
    assert results["server"].rounds_completed == 2
    lines = metrics(fed)
    assert [(m["round"], m["status"]) for m in lines] == [(0, "aborted"), (0, "ok"), (1, "ok")]
    assert "quorum needs 4" in lines[0]["reason"]
    assert lines[1]["contributors"] == ["p0", "p1", "p2", "p3"]
    _check_sums(fed, {0: PARTIES, 1: PARTIES}, drop_at={0: {"p4": INPUT_STAGE}})  # round 0: C without p4


def test_a_party_whose_upload_spoils_every_decryption_spends_the_round_not_the_federation(tmp_path) -> None:
    """p2 uploads uniform garbage in round 0 (every attempt): no decryptor set decodes. The attempt
    is retried once with its signed set, fails again, and the round is rejected; round 1 completes."""
    fed = provision(tmp_path / "fed", PARTIES, "he", max_round_retries=3)
    results = run_inprocess(fed, hooks={"p2": _garbage_upload}, timeout=240.0)
    assert results["server"].rounds_completed == 2
    lines = metrics(fed)
    assert [(m["round"], m["status"]) for m in lines] == [(0, "aborted"), (0, "rejected"), (1, "ok")]
    assert "round spent" in lines[1]["reason"]
    _check_sums(fed, {1: PARTIES})  # round 0 applied nothing
