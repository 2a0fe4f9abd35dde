"""secagg's low-level layer: PRG, KDF, Shamir, graph and framing, against committed known answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from securefed.protocols.base import ProtocolError
from securefed.protocols.secagg import frames, graph, shamir
from securefed.protocols.secagg.frames import Binding, Direction, Stage
from securefed.protocols.secagg.primitives import (
    commit,
    expand_mask,
    keystream,
    open_sealed,
    pairwise_seed,
    round_salt,
    seal,
    share_key,
    x25519_private,
    x25519_public_bytes,
)

VECTORS = Path(__file__).parents[1] / "vectors"


def load(name: str) -> dict:
    return json.loads((VECTORS / f"secagg_{name}.json").read_text())


def test_prg_known_answer() -> None:
    v = load("prg")
    key = bytes.fromhex(v["key"])
    assert keystream(key, 64).hex() == v["keystream_64"]
    assert [int(x) for x in expand_mask(key, 10, 27)] == v["mask_bits27_len10"]
    assert [int(x) for x in expand_mask(key, 6, 40)] == v["mask_bits40_len6"]


def test_kdf_known_answer() -> None:
    v = load("kdf")
    salt = round_salt(v["federation_id"], v["round"])
    assert salt.hex() == v["round_salt"]
    a, b = x25519_private(bytes.fromhex(v["sk_a"])), x25519_private(bytes.fromhex(v["sk_b"]))
    pk_a, pk_b = x25519_public_bytes(a), x25519_public_bytes(b)
    assert (pk_a.hex(), pk_b.hex()) == (v["pk_a"], v["pk_b"])
    ia, ib = v["idx_a"], v["idx_b"]
    assert pairwise_seed(a, pk_b, salt, ia, ib).hex() == v["pairwise_seed"]
    assert pairwise_seed(b, pk_a, salt, ib, ia).hex() == v["pairwise_seed"]  # both ends agree
    assert share_key(a, pk_b, salt, ia, ib).hex() == v["share_key_a_to_b"]
    assert share_key(b, pk_a, salt, ib, ia).hex() == v["share_key_b_to_a"]
    assert v["share_key_a_to_b"] != v["share_key_b_to_a"] != v["pairwise_seed"]  # distinct labels
    assert graph.graph_seed(salt).hex() == v["graph_seed"]
    assert [sorted(s) for s in graph.neighbours(12, 4, graph.graph_seed(salt))] == v["graph_n12_k4"]
    assert commit(bytes.fromhex(v["sk_a"]), salt).hex() == v["commit_of_sk_a"]
    assert pairwise_seed(a, pk_b, round_salt(v["federation_id"], v["round"] + 1), ia, ib).hex() != v["pairwise_seed"]


def test_shamir_known_answer() -> None:
    v = load("shamir")
    secret, coeffs = int(v["secret"], 16), [int(c, 16) for c in v["coefficients"]]
    shares = shamir.split_with_coefficients(secret, coeffs, v["xs"])
    assert {str(x): shamir.encode_share(y).hex() for x, y in shares.items()} == v["shares"]
    decoded = {int(x): shamir.decode_share(bytes.fromhex(h)) for x, h in v["shares"].items()}
    for subset in ([1, 2, 3], [3, 7, 11], [1, 7, 11], [2, 3, 7, 11]):
        assert shamir.recover({x: decoded[x] for x in subset}, v["threshold"]) == secret
    assert shamir.recover({x: decoded[x] for x in [1, 2]}, 2) != secret  # below t: wrong line
    with pytest.raises(ProtocolError):
        shamir.recover({1: decoded[1], 2: decoded[2]}, 3)


@settings(max_examples=15, deadline=None)
@given(t=st.integers(1, 6), extra=st.integers(0, 4), secret=st.binary(min_size=32, max_size=32),
       seed=st.binary(min_size=8, max_size=8))
def test_shamir_any_t_shares_recover(t: int, extra: int, secret: bytes, seed: bytes) -> None:
    xs = list(range(3, 3 + t + extra))
    pool = iter(seed * 10_000)
    shares = shamir.split(shamir.secret_to_int(secret), t, xs, lambda n: bytes(next(pool) for _ in range(n)))
    chosen = dict(list(shares.items())[extra:])
    assert shamir.int_to_secret(shamir.recover(chosen, t)) == secret


def test_shamir_rejects_out_of_field_share() -> None:
    with pytest.raises(ProtocolError):
        shamir.decode_share(shamir.PRIME.to_bytes(66, "big"))
    with pytest.raises(ProtocolError):
        shamir.decode_share(b"\x00" * 65)


def test_aead_binds_associated_data() -> None:
    key, nonce = bytes(range(32)), bytes(12)
    blob = seal(key, nonce, b"share", b"round-1|a|b")
    assert open_sealed(key, blob, b"round-1|a|b") == b"share"
    for bad_blob, aad in [(blob, b"round-2|a|b"), (blob, b"round-1|b|a"), (blob[:-1] + bytes([blob[-1] ^ 1]), b"round-1|a|b")]:
        with pytest.raises(ProtocolError):
            open_sealed(key, bad_blob, aad)


def test_sparse_graph_is_regular_symmetric_and_seeded() -> None:
    seed = graph.graph_seed(round_salt("f", 1))
    sets = graph.neighbours(50, 10, seed)
    assert all(len(s) == 10 and i not in s for i, s in enumerate(sets))
    assert all(i in sets[j] for i, s in enumerate(sets) for j in s)
    assert sets != graph.neighbours(50, 10, graph.graph_seed(round_salt("f", 2)))
    assert graph.neighbours(6, 5, seed)[0] == frozenset(range(1, 6))  # k >= n - 1: complete


def test_frames_are_length_checked_and_bound() -> None:
    b1, b2 = Binding(1, round_salt("f", 1)), Binding(2, round_salt("f", 2))
    frame = frames.encode(b1, Stage.SHARE, Direction.TO_PARTY, [b"p1", b"x" * 5])
    assert frames.decode(b1, Stage.SHARE, Direction.TO_PARTY, frame) == [b"p1", b"x" * 5]
    bad = [frame[:-1], frame + b"\0", frame[:50], b""]
    for payload in bad:
        with pytest.raises(ProtocolError):
            frames.decode(b1, Stage.SHARE, Direction.TO_PARTY, payload)
    for binding, stage, direction in [(b2, Stage.SHARE, Direction.TO_PARTY), (b1, Stage.MASKED, Direction.TO_PARTY),
                                      (b1, Stage.SHARE, Direction.FROM_PARTY)]:
        with pytest.raises(ProtocolError):
            frames.decode(binding, stage, direction, frame)
    huge_count = frames.pack_fields([b"a"])[:0] + (2**31).to_bytes(4, "little")
    with pytest.raises(ProtocolError):
        frames.unpack_fields(huge_count)


def test_mask_expansion_is_uniform_over_the_ring() -> None:
    bits = 11
    v = expand_mask(bytes(32), 200_000, bits)
    assert v.max() < 2**bits
    counts = np.bincount(v.astype(np.int64) >> 3, minlength=2 ** (bits - 3))
    expected = v.size / counts.size
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    from scipy.stats import chi2 as chi2_dist

    assert chi2_dist.sf(chi2, counts.size - 1) > 1e-4


@pytest.mark.parametrize("bits", [29, 33, 37, 40, 41])
def test_masks_cancel_and_agree_across_chunks(bits: int, monkeypatch) -> None:
    """Every ring path (uint32, split 32-bit words + high bytes, uint64) over several chunks and a
    short last chunk: +mask then -mask is the identity, masks add like expand_mask says, and the
    high bits of a split-ring mask are uniform."""
    from securefed.protocols.encoding import ring_dtype
    from securefed.protocols.secagg.primitives import MaskAccumulator

    from securefed.protocols.encoding import pack_ring
    from securefed.protocols.secagg import primitives

    monkeypatch.setattr(MaskAccumulator, "CHUNK_BYTES", 4096)  # 512..1024 coordinates per chunk
    monkeypatch.setattr(primitives, "SPLIT_CHUNK", 700)  # split rings: 700 coordinates per chunk
    n = 5000
    x = (np.arange(n, dtype=np.uint64) * 2654435761 % (1 << bits)).astype(ring_dtype(bits))
    k1, k2 = bytes(range(32)), bytes(range(1, 33))
    acc = MaskAccumulator(x, bits)
    acc.add_mask(k1, +1)
    acc.add_mask(k2, -1)
    got = acc.result().astype(np.uint64)
    want = (x.astype(np.uint64) + expand_mask(k1, n, bits).astype(np.uint64)
            - expand_mask(k2, n, bits).astype(np.uint64)) & np.uint64((1 << bits) - 1)
    np.testing.assert_array_equal(got, want)
    both = MaskAccumulator(x, bits)  # chunk-major, both keys per chunk: the same masks
    both.add_masks([(k1, +1), (k2, -1)])
    assert both.packed() == pack_ring(want, bits)
    back = MaskAccumulator(got.astype(ring_dtype(bits)), bits)
    back.add_mask(k1, -1)
    back.add_mask(k2, +1)
    np.testing.assert_array_equal(back.result(), x)
    top = expand_mask(k1, 40_000, bits).astype(np.int64) >> (bits - 3)  # 8 buckets of the top 3 bits
    counts = np.bincount(top, minlength=8)
    assert counts.min() > 40_000 / 8 * 0.9
