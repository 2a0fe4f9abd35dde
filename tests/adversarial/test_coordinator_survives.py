"""One malicious party against the coordinator (real gRPC/mTLS on loopback, threads of this
process). v1: a party that encoded a negative weight made the sum's weight negative and the
coordinator applied it (an app that validates raised inside `apply`, outside the abort path, and
`run()` died); one that revealed bad shares aborted the round and its retries. Now the decoded sum
is range-checked first, and a round spent that way is rejected with a metrics line, nothing is
applied, and the federation goes on with the next round."""

from __future__ import annotations

import numpy as np
import pytest

from _deploy_helpers import expected_sums, metrics, provision, run_inprocess, server_state
from securefed.protocols.base import Message
from securefed.protocols.encoding import WEIGHT_FRAC_BITS, pack_ring, ring_dtype, unpack_ring
from securefed.protocols.secagg import frames, shamir
from securefed.protocols.secagg.frames import Direction, Stage
from securefed.protocols.secagg.primitives import SIG_BYTES

PARTIES = ("p0", "p1", "p2")


def _rewrite(stage: Stage, edit):
    """A session hook: in round 0, rewrite this party's reply to `stage` with edit(session, fields)
    and sign it with the party's own key (a malicious party, not a network attacker)."""
    def hook(ctx, pid, session):
        if ctx.round != 0:
            return session

        class Evil:
            def handle(self, msg: Message) -> Message | None:
                reply = session.handle(msg)
                if reply is None or msg.stage != frames.STAGE_NAMES[stage]:
                    return reply
                binding = session._plan.binding
                fields = frames.decode(binding, stage, Direction.FROM_PARTY, reply.payload[:-SIG_BYTES])
                frame = frames.encode(binding, stage, Direction.FROM_PARTY, edit(session, fields))
                return frames.message(stage, frames.sign(session._sign, frame))
        return Evil()
    return hook


def _negative_weight(session, fields):
    """Subtract 3 x max_weight from the encoded weight slot of the masked input."""
    codec = session._plan.codec
    v = unpack_ring(fields[1], codec.bits, codec.length).astype(np.int64)
    v[codec.vector_len] = (v[codec.vector_len] - (3 * session._plan.ctx.max_weight << WEIGHT_FRAC_BITS)) % (1 << codec.bits)
    return [fields[0], pack_ring(v.astype(ring_dtype(codec.bits)), codec.bits)]


def _garbage_shares(session, fields):
    """Every unmasking share replaced by 7: with n = 3 (t = 2) no owner keeps t good shares."""
    out = [fields[0]]
    for item in fields[1:]:
        owner, kind, _ = frames.unpack_fields(item, count=3)
        out.append(frames.pack_fields([owner, kind, shamir.encode_share(7)]))
    return out


@pytest.mark.parametrize("stage, edit, reason", [(Stage.MASKED, _negative_weight, "total weight"),
                                                  (Stage.UNMASK, _garbage_shares, "valid shares")])
def test_a_spent_round_is_rejected_and_the_federation_goes_on(tmp_path, stage, edit, reason) -> None:
    """A round whose sum is out of range, or whose shares do not reconstruct, after parties unmasked:
    rejected with a metrics line and skipped (its parties refuse to unmask it again)."""
    fed = provision(tmp_path / "fed", PARTIES, "secagg")
    results = run_inprocess(fed, hooks={"p2": _rewrite(stage, edit)})
    assert results["server"].rounds_completed == 2
    lines = metrics(fed)
    assert [m["status"] for m in lines] == ["rejected", "ok"]
    assert reason in lines[0]["reason"]
    want, weight = expected_sums(fed, {1: PARTIES})  # round 0 applied nothing
    state = server_state(fed)
    np.testing.assert_allclose(state["delta_sum"], want, rtol=1e-6, atol=1e-3)
    assert state["total_weight"] == pytest.approx(weight, rel=1e-6, abs=1e-3)
