"""protocols/encoding.py: clip, stochastic rounding, ring sizing, packing, against known answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from securefed.protocols.encoding import (
    FixedPointCodec,
    from_ring,
    pack_bits,
    pack_ring,
    packed_size,
    stochastic_round,
    to_ring,
    unpack_bits,
    unpack_ring,
)

from _protocol_helpers import TestRng

VECTORS = Path(__file__).parents[1] / "vectors"


def test_encoder_known_answer() -> None:
    v = json.loads((VECTORS / "secagg_encoding.json").read_text())
    codec = FixedPointCodec.for_round(**v["codec"])
    assert codec.bits == v["bits"]
    dither = bytes.fromhex(v["dither"])
    parts = iter([dither[:24], dither[24:]])
    ring = codec.encode(np.array(v["delta"], np.float32), np.array(v["control"], np.float32), v["weight"],
                        lambda n: next(parts))
    assert [int(x) for x in ring] == v["ring"]
    assert pack_bits(ring, codec.bits).hex() == v["packed"]
    assert [int(x) for x in unpack_bits(bytes.fromhex(v["packed"]), codec.bits, codec.length)] == v["ring"]


@settings(max_examples=25, deadline=None)
@given(bits=st.integers(1, 64), count=st.integers(1, 200), seed=st.binary(min_size=1, max_size=8))
def test_pack_roundtrip(bits: int, count: int, seed: bytes) -> None:
    raw = np.frombuffer(TestRng(seed)(8 * count), dtype="<u8")
    values = raw & np.uint64((1 << bits) - 1) if bits < 64 else raw.copy()
    data = pack_bits(values, bits)
    assert len(data) == packed_size(count, bits)
    np.testing.assert_array_equal(unpack_bits(data, bits, count), values)


@settings(max_examples=25, deadline=None)
@given(bits=st.integers(1, 64), count=st.integers(1, 200), seed=st.binary(min_size=1, max_size=8))
def test_ring_layout_roundtrip(bits: int, count: int, seed: bytes) -> None:
    """pack_ring: pack_bits' layout except 33..40 bits (low uint32 words, then the packed high bits),
    always packed_size bytes, and only the canonical encoding unpacks."""
    raw = np.frombuffer(TestRng(seed)(8 * count), dtype="<u8")
    values = raw & np.uint64((1 << bits) - 1) if bits < 64 else raw.copy()
    data = pack_ring(values, bits)
    assert len(data) == packed_size(count, bits)
    np.testing.assert_array_equal(unpack_ring(data, bits, count), values)
    if bits not in range(33, 41):
        assert data == pack_bits(values, bits)
        return
    assert data[: 4 * count] == values.astype("<u4").tobytes()
    if (count * (bits - 32)) % 8:  # a spare bit set in the high plane is refused
        with pytest.raises(ValueError):
            unpack_ring(data[:-1] + bytes([data[-1] | 0x80]), bits, count)
    with pytest.raises(ValueError):
        unpack_ring(data[:-1], bits, count)


def test_unpack_rejects_wrong_length_and_padding() -> None:
    data = pack_bits(np.array([1, 2, 3], np.uint64), 5)  # 15 bits in 2 bytes, 1 spare bit
    with pytest.raises(ValueError):
        unpack_bits(data + b"\0", 5, 3)
    with pytest.raises(ValueError):
        unpack_bits(data[:-1], 5, 3)
    with pytest.raises(ValueError):
        unpack_bits(data[:-1] + bytes([data[-1] | 0x80]), 5, 3)


def test_ring_roundtrip_signed() -> None:
    q = np.array([-(2**20), -1, 0, 1, 2**20 - 1], np.int64)
    np.testing.assert_array_equal(from_ring(to_ring(q, 22), 22), q)


def test_stochastic_round_is_unbiased_and_bounded() -> None:
    u = np.frombuffer(TestRng(b"u")(4 * 20000), "<u4").astype(np.float64) / 2**32
    q = stochastic_round(np.full(20000, 2.3), u, 10)
    assert set(np.unique(q)) <= {2, 3}
    assert abs(q.mean() - 2.3) < 0.02
    assert stochastic_round(np.array([5.0]), np.array([0.9999999999]), 5)[0] == 5  # clamped


def test_sum_never_wraps_at_the_extremes() -> None:
    n, m = 7, 5
    codec = FixedPointCodec.for_round(n, m, True, 9, 1.0, 1.0, 10)
    total = np.zeros(codec.length, dtype=np.uint64)
    for sign in (1, -1):
        total[:] = 0
        for i in range(n):
            x = np.full(m, 3.0 * sign, np.float32)  # beyond the clip: clipped to +-1
            total += codec.encode(x, x, 9, TestRng(bytes([i]))).astype(np.uint64)
        dec = codec.decode_sum(total & np.uint64((1 << codec.bits) - 1))
        np.testing.assert_allclose(dec.delta_sum, sign * n * 9.0)
        np.testing.assert_allclose(dec.control_sum, sign * float(n))
        assert dec.total_weight == n * 9 and dec.clipped == n * m and dec.control_clipped == n * m


def test_bits_grow_with_parties_weight_and_precision() -> None:
    base = FixedPointCodec.for_round(10, 4, False, 1, 1.0, 1.0, 16).bits
    assert FixedPointCodec.for_round(1000, 4, False, 1, 1.0, 1.0, 16).bits > base
    assert FixedPointCodec.for_round(10, 4, False, 100, 1.0, 1.0, 16).bits > base
    assert FixedPointCodec.for_round(10, 4, False, 1, 1.0, 1.0, 20).bits == base + 4
    with pytest.raises(ValueError, match="precision_bits"):
        FixedPointCodec.for_round(10**6, 4, False, 10**6, 1.0, 1.0, 40)


def test_encode_rejects_bad_input() -> None:
    codec = FixedPointCodec.for_round(3, 3, False, 5, 1.0, 1.0, 8)
    with pytest.raises(ValueError):
        codec.encode(np.zeros(3, np.float32), None, 6.0, TestRng(b"x"))  # weight above the bound
    with pytest.raises(ValueError):
        codec.encode(np.array([0, np.nan, 0], np.float32), None, 1.0, TestRng(b"x"))
    with pytest.raises(ValueError):
        codec.encode(np.zeros(4, np.float32), None, 1.0, TestRng(b"x"))


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 6), m=st.integers(1, 40), seed=st.binary(min_size=1, max_size=4))
def test_decoded_sum_within_bound(n: int, m: int, seed: bytes) -> None:
    codec = FixedPointCodec.for_round(n, m, False, 20, 0.5, 1.0, 12)
    rng = TestRng(seed)
    total = np.zeros(codec.length, dtype=np.uint64)
    exact = np.zeros(m)
    for i in range(n):
        x = (np.frombuffer(rng(4 * m), "<u4") / 2**32 - 0.5).astype(np.float32)  # inside the clip
        w = float(1 + i % 20)
        exact += w * x.astype(np.float64)
        total += codec.encode(x, None, w, rng).astype(np.uint64)
    dec = codec.decode_sum(total & np.uint64((1 << codec.bits) - 1))
    assert np.max(np.abs(dec.delta_sum - exact)) <= codec.error_bound(n)
    assert dec.total_weight == sum(1 + i % 20 for i in range(n))
