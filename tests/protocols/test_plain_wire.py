"""`plain` uploads float32 (4 bytes a coordinate plus a 24-byte header), and the server still folds
the weights in and sums in float64, exactly."""

from __future__ import annotations

import numpy as np
import pytest

from securefed.protocols.base import PartyInput, RoundContext
from securefed.protocols.driver import run_round
from securefed.protocols.plain import Plain

IDS = ("a", "b", "c")
HEADER = 8 + 16  # the float64 weight, then magic + version + element count


@pytest.mark.parametrize("has_control", [False, True])
def test_plain_sends_fp32_plus_a_small_header_and_sums_exactly(has_control):
    m = 1000
    rng = np.random.default_rng(0)
    inputs = {p: PartyInput(rng.normal(size=m).astype(np.float32),
                            rng.normal(size=m).astype(np.float32) if has_control else None, float(w))
              for p, w in zip(IDS, (3, 70, 1))}
    ctx = RoundContext("f", 0, IDS, m, has_control, 128)
    protocol = Plain()
    server_material, party_material = protocol.provision(IDS)
    vsum, traffic = run_round(protocol, ctx, inputs, server_material, party_material)
    fp32_bytes = 4 * m * (2 if has_control else 1)
    assert all(traffic.sent[p] == fp32_bytes + HEADER for p in IDS)
    exact = sum(inputs[p].weight * inputs[p].delta.astype(np.float64) for p in IDS)
    assert vsum.delta_sum.dtype == np.float64 and np.array_equal(vsum.delta_sum, exact)
    assert vsum.total_weight == 74.0
    if has_control:
        assert np.array_equal(vsum.control_sum, sum(inputs[p].control_delta.astype(np.float64) for p in IDS))


def test_float64_input_travels_as_float64():
    # The integer carrier of user-level distributed DP is float64 and must not be rounded.
    big = np.array([2.0**40 + 1, -(2.0**33) - 3], dtype=np.float64)
    inputs = {p: PartyInput(big, None, 1.0) for p in IDS}
    ctx = RoundContext("f", 0, IDS, 2, False, 1)
    vsum, traffic = run_round(Plain(), ctx, inputs, None, {p: None for p in IDS})
    assert np.array_equal(vsum.delta_sum, 3 * big) and traffic.sent["a"] == 8 * 2 + HEADER


@pytest.mark.parametrize("weight", [0.0, -1.0, float("nan"), 129.0])
def test_server_drops_a_party_with_an_out_of_range_weight(weight):
    import struct

    from securefed.protocols.base import Message
    from securefed.protocols.plain import STAGE
    from securefed.protocols.wire import pack_vector

    ctx = RoundContext("f", 0, IDS, 2, False, 128)
    server = Plain().server(ctx, None)
    good = Message(STAGE, struct.pack("<d", 2.0) + pack_vector(np.ones(2), "<f4"))
    bad = Message(STAGE, struct.pack("<d", weight) + pack_vector(np.ones(2), "<f4"))
    server.step({"a": good, "b": bad, "c": good})
    assert server.result().contributors == ("a", "c") and server.result().total_weight == 4.0
