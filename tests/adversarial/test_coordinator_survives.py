"""One malicious party against the coordinator (real gRPC/mTLS on loopback, threads of this
process). v1: a party that encoded a negative weight made the sum's weight negative and the
coordinator applied it (an app that validates raised inside `apply`, outside the abort path, and
`run()` died). Now the decoded sum is range-checked first: the round is rejected with a metrics
line, nothing is applied, and the federation goes on."""

from __future__ import annotations

import numpy as np
import pytest

from _deploy_helpers import expected_sums, metrics, provision, run_inprocess, server_state
from securefed.protocols.base import Message
from securefed.protocols.encoding import WEIGHT_FRAC_BITS, pack_bits, ring_dtype, unpack_bits
from securefed.protocols.secagg import frames
from securefed.protocols.secagg.frames import Direction, Stage
from securefed.protocols.secagg.primitives import SIG_BYTES

PARTIES = ("p0", "p1", "p2")


def _negative_weight(ctx, pid, session):
    """Round 0: subtract 3 x max_weight from this party's encoded weight slot (validly signed)."""
    if ctx.round != 0:
        return session

    class Evil:
        def handle(self, msg: Message) -> Message | None:
            reply = session.handle(msg)
            if reply is None or msg.stage != frames.STAGE_NAMES[Stage.MASKED]:
                return reply
            plan = session._plan
            codec = plan.codec
            fields = frames.decode(plan.binding, Stage.MASKED, Direction.FROM_PARTY, reply.payload[:-SIG_BYTES])
            v = unpack_bits(fields[1], codec.bits, codec.length).astype(np.int64)
            v[codec.vector_len] = (v[codec.vector_len] - (3 * ctx.max_weight << WEIGHT_FRAC_BITS)) % (1 << codec.bits)
            fields[1] = pack_bits(v.astype(ring_dtype(codec.bits)), codec.bits)
            frame = frames.encode(plan.binding, Stage.MASKED, Direction.FROM_PARTY, fields)
            return frames.message(Stage.MASKED, frames.sign(session._sign, frame))
    return Evil()


def test_out_of_range_sum_is_rejected_and_the_federation_goes_on(tmp_path) -> None:
    fed = provision(tmp_path / "fed", PARTIES, "secagg")
    results = run_inprocess(fed, hooks={"p2": _negative_weight})
    assert results["server"].rounds_completed == 2
    lines = metrics(fed)
    assert [m["status"] for m in lines] == ["rejected", "ok"]
    assert "total weight" in lines[0]["reason"]
    want, weight = expected_sums(fed, {1: PARTIES})  # round 0 applied nothing
    state = server_state(fed)
    np.testing.assert_allclose(state["delta_sum"], want, rtol=1e-6, atol=1e-3)
    assert state["total_weight"] == pytest.approx(weight, rel=1e-6, abs=1e-3)
