"""The threshold `he` ring layer: known answers (tests/vectors/he_ring.json), the negacyclic
product against a schoolbook one, and interoperability with SEAL both ways (same NTT convention;
SEAL's public-key encryptions decrypt with our arithmetic; SEAL decrypts our public-key
encryptions; our products equal SEAL's)."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import tenseal.sealapi as seal

from securefed.protocols.he import rlwe
from securefed.protocols.he.ring import PRIMES_8192, Ring, sample_bounded, sample_cbd, sample_ternary
from securefed.protocols.he.sealio import load_bytes, save_bytes

sys.path.insert(0, str(Path(__file__).parents[1] / "vectors"))
import make_he_ring_vectors as kat  # noqa: E402

VECTORS = Path(__file__).parents[1] / "vectors" / "he_ring.json"


def test_known_answers():
    expected = json.loads(VECTORS.read_text())
    assert kat.compute() == expected


def test_known_answer_decode_is_the_input():
    expected = json.loads(VECTORS.read_text())
    i = np.arange(8)
    assert expected["decoded_first8"] == list((i * 7919) % 2001 - 1000)


def _schoolbook(a: list[int], b: list[int], p: int) -> list[int]:
    n, out = len(a), [0] * len(a)
    for i in range(n):
        for j in range(n):
            sign = -1 if i + j >= n else 1
            out[(i + j) % n] += sign * a[i] * b[j]
    return [v % p for v in out]


@pytest.mark.parametrize("n", [2, 16, 64])
def test_ntt_product_is_the_negacyclic_product(n):
    ring = Ring(n, PRIMES_8192[:3])
    rng = np.random.default_rng(n)
    a = ring.from_int64(rng.integers(-(2**40), 2**40, size=n))
    b = ring.from_int64(rng.integers(-(2**40), 2**40, size=n))
    got = ring.intt(ring.mul(ring.ntt(a), ring.ntt(b)))
    for l, p in enumerate(ring.primes):
        assert [int(v) for v in got[l]] == _schoolbook([int(v) for v in a[l]], [int(v) for v in b[l]], p)
    assert np.array_equal(ring.intt(ring.ntt(a)), a)


def test_crt_roundtrip_of_centered_integers():
    ring = rlwe.ring_for()
    vals = [0, 1, -1, 2**150, -(2**150) + 12345, ring.modulus // 2, -(ring.modulus // 2) + 1]
    x = np.array([[v % p for v in vals] for p in ring.primes], dtype=np.uint64)
    assert [int(v) for v in ring.to_centered_ints(x)] == vals


def test_samplers_stay_in_range():
    rng = np.random.default_rng(1)
    src = lambda n: rng.bytes(n)  # noqa: E731
    t = sample_ternary(src, (50000,))
    assert set(np.unique(t)) == {-1, 0, 1} and abs(t.mean()) < 0.02
    e = sample_cbd(src, (50000,))
    assert np.abs(e).max() <= 21 and abs(e.var() - 10.5) < 0.5
    f = rlwe.flooding(rlwe.ring_for(), src, 1, 70)
    c = rlwe.ring_for().to_centered_ints(f[0])
    assert max(abs(int(v)) for v in c) <= 2**70 and max(abs(int(v)) for v in c) > 2**68


# -- SEAL interoperability (one of our primes: SEAL's key level is then the data level) ---------


@pytest.fixture(scope="module")
def seal_bfv():
    p, t = PRIMES_8192[0], 65537
    parms = seal.EncryptionParameters(seal.SCHEME_TYPE.BFV)
    parms.set_poly_modulus_degree(8192)
    parms.set_coeff_modulus([seal.Modulus(p)])
    parms.set_plain_modulus(seal.Modulus(t))
    ctx = seal.SEALContext(parms, False, seal.SEC_LEVEL_TYPE.NONE)  # 31 bits: an interop fixture only
    assert ctx.parameters_set()
    keygen = seal.KeyGenerator(ctx)
    return ctx, keygen, Ring(8192, (p,)), t


def _ct_poly(ct, n: int, index: int) -> np.ndarray:
    words = ct.dyn_array()
    return np.array([words.at(index * n + i) for i in range(n)], dtype=np.uint64).reshape(1, n)


def _secret_ntt(keygen, n: int) -> np.ndarray:
    """SEAL's secret key words: SEAL keeps it in NTT form (its roots, its bit-reversed order)."""
    sk = keygen.secret_key()  # keep the owner alive while reading its plaintext
    plain = sk.data()
    return np.array([plain.data(i) for i in range(n)], dtype=np.uint64).reshape(1, n)


def test_our_ntt_form_is_seals(seal_bfv):
    """SEAL's NTT-form secret key, used as-is as our NTT-form key, decrypts SEAL's ciphertext: our
    NTT has SEAL's roots and order. (An NTT with another primitive root would read the key as an
    automorphism of it, still ternary, and decrypt garbage: the decryption is the real check.)"""
    ctx, keygen, ring, t = seal_bfv
    ct = seal.Ciphertext()
    seal.Encryptor(ctx, keygen.secret_key()).encrypt_symmetric(seal.Plaintext("5x^3 + 1"), ct)
    s_ntt = _secret_ntt(keygen, ring.n)
    x = ring.add(_ct_poly(ct, ring.n, 0), ring.intt(ring.mul(ring.ntt(_ct_poly(ct, ring.n, 1)), s_ntt)))
    m = [round(int(v) * t / ring.primes[0]) % t for v in ring.to_centered_ints(x)]
    assert m[:4] == [1, 0, 0, 5] and not any(m[4:])
    centered = ring.to_centered_ints(ring.intt(s_ntt))
    assert set(int(v) for v in centered) <= {-1, 0, 1}


def test_seal_public_key_encryption_decrypts_with_our_ring(seal_bfv):
    ctx, keygen, ring, t = seal_bfv
    pk = seal.PublicKey()
    keygen.create_public_key(pk)
    s_ntt = _secret_ntt(keygen, ring.n)
    coeffs = [(7 * i + 3) % t for i in range(64)]
    pt = seal.Plaintext(" + ".join(f"{c:X}x^{i}" for i, c in reversed(list(enumerate(coeffs))) if c))
    ct = seal.Ciphertext()
    seal.Encryptor(ctx, pk).encrypt(pt, ct)
    assert not ct.is_ntt_form()
    c0, c1 = _ct_poly(ct, ring.n, 0), _ct_poly(ct, ring.n, 1)
    x = ring.add(c0, ring.intt(ring.mul(ring.ntt(c1), s_ntt)))  # c0 + c1 * s
    q = ring.primes[0]
    m = [round(int(v) * t / q) % t for v in ring.to_centered_ints(x)]
    assert m[:64] == coeffs and not any(m[64:])


def test_our_product_equals_seal_multiply_plain(seal_bfv):
    ctx, keygen, ring, t = seal_bfv
    ct = seal.Ciphertext()
    seal.Encryptor(ctx, keygen.secret_key()).encrypt_symmetric(seal.Plaintext("5x^3 + 1"), ct)
    coeffs = [(11 * i + 1) % t for i in range(40)]
    pt = seal.Plaintext(" + ".join(f"{c:X}x^{i}" for i, c in reversed(list(enumerate(coeffs)))))
    prod = seal.Ciphertext()
    seal.Evaluator(ctx).multiply_plain(ct, pt, prod)
    c1 = _ct_poly(ct, ring.n, 1)
    plain = np.zeros(ring.n, dtype=np.int64)
    plain[:40] = coeffs
    ours = ring.intt(ring.mul(ring.ntt(c1), ring.ntt(ring.from_int64(plain))))
    assert np.array_equal(ours, _ct_poly(prod, ring.n, 1))


def _seal_ciphertext_from(ctx, template, c0: np.ndarray, c1: np.ndarray):
    """A SEAL ciphertext holding our (c0, c1) (coefficient form): SEAL's own serialization of
    `template` with its words replaced, written uncompressed (SEAL reads any compression mode)."""
    zstandard = pytest.importorskip("zstandard")
    blob = save_bytes(template.save)
    raw = zstandard.ZstdDecompressor().decompress(blob[16:])
    words = np.concatenate([c0.reshape(-1), c1.reshape(-1)]).astype("<u8").tobytes()
    assert raw[-len(words) :] != words and len(raw) > len(words)
    body = raw[: -len(words)] + words
    magic, hsize, major, minor, _, reserved, _ = struct.unpack_from("<HBBBBHQ", blob)
    out = struct.pack("<HBBBBHQ", magic, hsize, major, minor, 0, reserved, 16 + len(body)) + body
    ct = seal.Ciphertext()
    load_bytes(lambda path: ct.load(ctx, path), out)
    return ct


def test_seal_decrypts_our_encryption(seal_bfv):
    """Our public-key encryption (rlwe.encrypt) under a key built from SEAL's secret key, given to
    SEAL as a ciphertext: SEAL's decryptor returns the plaintext."""
    ctx, keygen, ring, t = seal_bfv
    s_ntt = _secret_ntt(keygen, ring.n)
    rng = np.random.default_rng(7).bytes
    a = rlwe.crs(ring, b"interop")
    b = ring.sub(ring.ntt(ring.from_int64(sample_cbd(rng, (ring.n,)))), ring.mul(a, s_ntt))
    m = (np.arange(ring.n) * 31 + 5) % t
    q = ring.primes[0]
    scaled = (m * q + t // 2) // t  # BFV's round(q * m / t), as SEAL encodes (exact in int64)
    c0, c1 = rlwe.encrypt(ring, a, b, ring.from_int64(scaled).reshape(1, 1, ring.n), rng)
    template = seal.Ciphertext()
    seal.Encryptor(ctx, keygen.secret_key()).encrypt_symmetric(seal.Plaintext("1"), template)
    ct = _seal_ciphertext_from(ctx, template, c0[0], ring.intt(c1)[0])
    pt = seal.Plaintext()
    seal.Decryptor(ctx, keygen.secret_key()).decrypt(ct, pt)
    assert [pt.data(i) for i in range(ring.n)] == [int(v) for v in m]


@pytest.mark.parametrize("value_bits,k", [(26, 5), (40, 3), (62, 2)])
def test_fused_encrypt_and_partial_decrypt_equal_the_textbook_formulas(value_bits, k):
    """rlwe.encrypt(encode_message(...)) / partial_decrypt (one ciphertext at a time, Shoup
    products, lazy reduction) compute bit for bit the textbook c1 = a*u + e1, c0 = INTT(b*u) + e0 + Delta*V,
    d = INTT(c1*s) + f from the same random bytes, for several ciphertexts and for digit
    widths on both sides of encode's int64 fast path."""
    ring = rlwe.ring_for()
    gen = np.random.default_rng(value_bits)
    values = gen.integers(-(2 ** (value_bits - 1)) + 1, 2 ** (value_bits - 1), size=2 * k * ring.n + 77)
    a = rlwe.crs(ring, b"fused")
    s, b = rlwe.keygen_share(ring, a, kat.FixedStream("fused-key"))
    c0, c1 = rlwe.encrypt(ring, a, b, rlwe.encode_message(ring, values, value_bits, k, 20), kat.FixedStream("fused"))
    src = kat.FixedStream("fused")
    u, e1, e0 = sample_ternary(src, (3, ring.n)), sample_cbd(src, (3, ring.n)), sample_cbd(src, (3, ring.n))
    u = ring.ntt(ring.from_int64(u))
    assert np.array_equal(c1, ring.add(ring.mul(u, a), ring.ntt(ring.from_int64(e1))))
    msg = np.zeros((3, ring.size, ring.n), dtype=object)
    padded = np.zeros(3 * k * ring.n, dtype=object)
    padded[: values.size] = values
    for c in range(3):
        for l, p in enumerate(ring.primes):
            digits = padded[c * k * ring.n : (c + 1) * k * ring.n].reshape(k, ring.n)
            msg[c, l] = sum(digits[j] * pow(2, 20 + value_bits * j, p) for j in range(k)) % p
    want0 = ring.add(ring.add(ring.intt(ring.mul(u, b)), ring.from_int64(e0)), msg.astype(np.uint64))
    assert np.array_equal(c0, want0)
    d = rlwe.partial_decrypt(ring, c1, s, 70, kat.FixedStream("flood"))
    src = kat.FixedStream("flood")
    hi = sample_bounded(src, (3, ring.n), 70 - 32).astype(object)
    flood = hi * 2**32 + np.frombuffer(src(4 * 3 * ring.n), dtype="<u4").reshape(3, ring.n).astype(object)
    assert flood.min() >= -(2**70) and flood.max() < 2**70
    f = np.stack([np.stack([flood[c] % p for p in ring.primes]) for c in range(3)]).astype(np.uint64)
    assert np.array_equal(d, ring.add(ring.intt(ring.mul(c1, s)), f))
    assert np.array_equal(rlwe.flooding(ring, kat.FixedStream("flood"), 3, 70), f)


def test_threads_change_nothing(monkeypatch):
    """rlwe.THREADS spreads ciphertexts over threads; the randomness is drawn before, so the
    output is the same bytes as on one thread."""
    ring = rlwe.ring_for()
    a = rlwe.crs(ring, b"threads")
    s, b = rlwe.keygen_share(ring, a, kat.FixedStream("threads-key"))
    msg = rlwe.encode_message(ring, np.arange(3 * 2 * ring.n) % 4000 - 2000, 13, 2, 30)
    outs = []
    for threads in (1, 2):
        monkeypatch.setattr(rlwe, "THREADS", threads)
        c0, c1 = rlwe.encrypt(ring, a, b, msg, kat.FixedStream("threads"))
        outs.append((c0, c1, rlwe.partial_decrypt(ring, c1, s, 50, kat.FixedStream("threads-d"))))
    for x, y in zip(*outs):
        assert np.array_equal(x, y)


def _decode_reference(ring, x, value_bits, k, delta_bits, noise_bound, strict):
    """decode_message in Python integers (the definition crt.decode_digits vectorises)."""
    n_ct = x.shape[0]
    flat = ring.to_centered_ints(np.moveaxis(x, 1, 0).reshape(ring.size, -1))
    v = (flat + (1 << (delta_bits - 1))) >> delta_bits
    resid = flat - (v << delta_bits)
    if strict and max(-int(resid.min()), int(resid.max())) > noise_bound:
        return None
    base, hb = 1 << value_bits, 1 << (value_bits - 1)
    digits = np.empty((k, v.size), dtype=np.int64)
    for j in range(k):
        dj = ((v + hb) % base) - hb
        digits[j] = dj.astype(np.int64)
        v = (v - dj) >> value_bits
    if strict and (int(v.min()) != 0 or int(v.max()) != 0):
        return None
    return digits.reshape(k, n_ct, ring.n).transpose(1, 0, 2).reshape(-1)


@pytest.mark.parametrize("value_bits,k,delta_bits", [(26, 5, 72), (13, 2, 40), (62, 2, 80)])
def test_vectorised_decode_equals_python_integers(monkeypatch, value_bits, k, delta_bits):
    """rlwe.decode_message (crt.decode_digits: Garner, limbs, two's complement) against the
    Python-integer definition: honest sums, noise exactly at and one past the bound (both signs),
    a value one digit too wide, and uniform garbage; several chunks."""
    from securefed.protocols.he import crt

    monkeypatch.setattr(crt, "_CHUNK", 3000)
    ring = rlwe.ring_for()
    gen = np.random.default_rng(value_bits)
    n, bound = 2 * ring.n, 2 ** (delta_bits - 2)
    big = gen.integers(-(2 ** (value_bits - 1)) + 1, 2 ** (value_bits - 1), size=(k, n)).astype(object)
    vals = sum(big[j] * (1 << (value_bits * j)) for j in range(k))  # V, k balanced digits
    noise = gen.integers(-(2**30), 2**30, size=n).astype(object)
    noise[:4] = [bound, -bound, bound - 1, -bound + 1]

    def residues(ints):
        return np.stack([np.stack([np.array([v % p for v in ints[c * ring.n : (c + 1) * ring.n]], dtype=np.uint64)
                                   for p in ring.primes]) for c in range(2)])  # (2, L, N)

    def check(ints, want_none):
        x = residues(ints)
        for strict in (True, False):
            args = (ring, x, value_bits, k, delta_bits, float(bound), strict)
            got, ref = rlwe.decode_message(*args), _decode_reference(*args)
            assert (got is None) == (ref is None) == (strict and want_none)
            if ref is not None:
                assert np.array_equal(got, ref)

    honest = vals * (1 << delta_bits) + noise
    check(honest, False)
    x = residues(honest)
    assert np.array_equal(rlwe.decode_message(ring, x, value_bits, k, delta_bits, float(bound)),
                          np.stack([big[:, c * ring.n : (c + 1) * ring.n] for c in range(2)]).reshape(-1).astype(np.int64))
    for off in (bound + 1, -bound - 1):
        bad = honest.copy()
        bad[5] = vals[5] * (1 << delta_bits) + off
        check(bad, True)
    wide = honest.copy()
    wide[7] += (1 << (value_bits * k + delta_bits)) * (1 if vals[7] >= 0 else -1)
    if abs(int(wide[7])) < ring.modulus // 2:
        check(wide, True)
    garbage = gen.integers(0, 2**62, size=n).astype(object) * (1 << 150)
    check(garbage, True)
