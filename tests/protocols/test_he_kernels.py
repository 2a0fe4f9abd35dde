"""The compiled kernels (protocols/he/kernels.py) against the numpy passes they replace: equal
words on random inputs for every prime and every ring degree in use (N = 8192 and the tests' small
N), for the NTT and for ring.py's pointwise mul_fixed / reduce / from_small / add_to / mod_p, the
compiled path actually taken when numba is installed (a core dependency), and the numpy fallback
(one log line) when it cannot be imported or SECUREFED_HE_KERNELS=numpy asks for it. The SEAL
known-answer and interop tests (test_he_ring.py) run on the compiled path."""

from __future__ import annotations

import logging
import random
import sys

import numpy as np
import pytest

from securefed.protocols.he import ntt
from securefed.protocols.he.ntt import NTTPlan
from securefed.protocols.he.ring import PRIMES_8192, Ring


def _plans(n: int, primes: tuple[int, ...]) -> tuple[Ring, NTTPlan, NTTPlan]:
    ring = Ring(n, primes)
    return ring, NTTPlan(primes, n, *ring._tables), NTTPlan(primes, n, *ring._tables, compiled=False)


def _residues(ring: Ring, rng: np.random.Generator, lead: tuple[int, ...] = ()) -> np.ndarray:
    x = rng.integers(0, 2**63, size=(*lead, ring.size, ring.n), dtype=np.uint64) % ring._p
    x[..., 0] = (ring._p - 1)[:, 0]  # the largest residue, and 0, always among the inputs
    x[..., -1] = 0
    return x.astype(np.uint32)


def test_the_compiled_kernels_are_in_use():
    _, fast, ref = _plans(16, PRIMES_8192)
    assert fast._kernels is not None and ref._kernels is None


@pytest.mark.parametrize("n", [2, 4, 16, 64, 1024, 8192])
def test_compiled_transforms_equal_the_numpy_passes(n):
    ring, fast, ref = _plans(n, PRIMES_8192)  # all 7 primes; n = 2, 16, 64 are test_he_ring's
    rng = np.random.default_rng(n)
    for _ in range(3):
        x = _residues(ring, rng)
        a, b = x.copy(), x.copy()
        fast.forward(a)
        ref.forward(b)
        assert np.array_equal(a, b)
        assert not np.array_equal(a, x)  # the transform did something
        c, d = a.copy(), a.copy()
        fast.inverse(c)
        ref.inverse(d)
        assert np.array_equal(c, d) and np.array_equal(c, x)
        y1, y2 = x.copy(), x.copy()  # an arbitrary input to the inverse, not only a forward output
        fast.inverse(y1)
        ref.inverse(y2)
        assert np.array_equal(y1, y2)


@pytest.mark.parametrize("primes", [PRIMES_8192[:1], PRIMES_8192[3:5]])
def test_ring_ntt_of_a_batch_equals_the_numpy_passes(primes):
    ring, _, ref = _plans(8192, primes)
    x = _residues(ring, np.random.default_rng(1), (3,))
    got = ring.ntt(x)
    want = x.copy()
    for elem in want:
        ref.forward(elem)
    assert got.dtype == np.uint64 and np.array_equal(got, want)
    assert np.array_equal(ring.intt(got), x)


def test_without_numba_the_numpy_passes_run_and_say_so(monkeypatch, caplog):
    ntt._import_kernels.cache_clear()
    monkeypatch.setitem(sys.modules, ntt.__package__ + ".kernels", None)  # import fails
    try:
        with caplog.at_level(logging.WARNING, logger=ntt.__name__):
            ring, plan, ref = _plans(64, PRIMES_8192[:2])
        assert plan._kernels is None
        assert len([r for r in caplog.records if "numpy passes" in r.getMessage()]) == 1
        x = _residues(ring, np.random.default_rng(2))
        a, b = x.copy(), x.copy()
        plan.forward(a)
        ref.forward(b)
        assert np.array_equal(a, b)
    finally:
        monkeypatch.undo()
        ntt._import_kernels.cache_clear()
    assert NTTPlan(PRIMES_8192[:1], 16, *Ring(16, PRIMES_8192[:1])._tables)._kernels is not None


def test_the_environment_can_ask_for_the_numpy_passes(monkeypatch):
    monkeypatch.setenv("SECUREFED_HE_KERNELS", "numpy")
    assert _plans(16, PRIMES_8192[:1])[1]._kernels is None


def _ring_pair(monkeypatch, n: int) -> tuple[Ring, Ring]:
    """(numpy passes, compiled kernels) rings alike."""
    with monkeypatch.context() as m:
        m.setenv("SECUREFED_HE_KERNELS", "numpy")
        slow = Ring(n, PRIMES_8192)
        assert slow._k is None
    fast = Ring(n, PRIMES_8192)
    assert fast._k is not None
    return slow, fast


@pytest.mark.parametrize("n", [16, 8192])
def test_compiled_pointwise_operations_equal_the_numpy_passes(monkeypatch, n):
    slow, fast = _ring_pair(monkeypatch, n)
    rng = np.random.default_rng(n)
    p, shape = fast._p, (3, fast.size, n)

    def below(b: int, dtype) -> np.ndarray:  # reduced residues times up to b: [0, b p)
        return (rng.integers(0, 2**63, shape, dtype=np.uint64) % (p * np.uint64(b))).astype(dtype)

    w = fast.fixed(rng.integers(0, 2**63, (fast.size, n), dtype=np.uint64) % p)
    for dtype in (np.uint32, np.uint64):
        x = rng.integers(0, 2**32, shape, dtype=np.uint64).astype(dtype)  # any x < 2^32
        for xs in (x, x[0]):
            got, want = fast.mul_fixed(xs, w), slow.mul_fixed(xs, w)
            assert got.dtype == want.dtype == np.uint64 and np.array_equal(got, want)
    for b in (2, 4, 8):
        for src, dst in ((np.uint64, np.uint64), (np.uint64, np.uint32), (np.uint32, np.uint32)):
            if src == np.uint32 and b > 2:
                continue  # [0, b p) does not fit 32 bits
            x = below(b, src)
            got, want = fast.reduce(x, b, out=np.empty(shape, dst)), slow.reduce(x, b, out=np.empty(shape, dst))
            assert got.dtype == want.dtype and np.array_equal(got, want)
            got, want = fast.reduce(x.copy(), b), slow.reduce(x.copy(), b)  # in place
            assert np.array_equal(got, want) and np.all(got < p)
    small = rng.integers(-(2**30), 2**30, (4, n))
    for xs in (small, small[0]):
        got, want = fast.from_small(xs), slow.from_small(xs)
        assert got.dtype == want.dtype == np.uint32 and np.array_equal(got, want)
    words = rng.integers(0, 2**64, shape, dtype=np.uint64, endpoint=False)  # any 64-bit words
    words[0, :, :4] = [0, 2**64 - 1, 2**32, 2**32 - 1]
    words[0, :, 4] = p[:, 0] * np.uint64(2**32)
    words[0, :, 5] = (np.uint64(2**64 - 1) // p[:, 0]) * p[:, 0]  # the largest multiple of p
    for ws in (words, words[0], np.frombuffer(words.tobytes(), "<u8").reshape(shape)):  # also read-only
        got, want = fast.mod_p(ws), slow.mod_p(ws)
        assert np.array_equal(got, want) and np.array_equal(want, ws % p)
    assert np.array_equal(fast.mod_p(words[:, :, :5]), words[:, :, :5] % p)  # rows of another width
    for dtype in (np.uint32, np.uint64):
        acc, x = below(1, np.uint64), below(1, dtype)
        a, b = acc.copy(), acc.copy()
        fast.add_to(a, x)
        slow.add_to(b, x)
        assert np.array_equal(a, b) and not np.array_equal(a, acc)


@pytest.mark.parametrize("value_bits,k,delta_bits", [(26, 5, 72), (62, 2, 80)])
def test_compiled_decode_equals_the_numpy_passes(monkeypatch, value_bits, k, delta_bits):
    """crt.decode_digits both ways on honest sums (noise up to the bound), sums one past the bound,
    a value too wide for k digits, and uniform garbage (test_he_ring.py checks the compiled path
    against Python integers)."""
    from securefed.protocols.he import crt

    primes, q = PRIMES_8192, Ring(16, PRIMES_8192).modulus
    rng = np.random.default_rng(value_bits)
    m, bound = 2500, 2 ** (delta_bits - 2)  # more than one of the kernel's chunks
    digits = rng.integers(-(2 ** (value_bits - 1)) + 1, 2 ** (value_bits - 1), size=(k, m)).astype(object)
    vals = sum(digits[j] * (1 << (value_bits * j)) for j in range(k))
    draw = random.Random(k)
    ints = vals * (1 << delta_bits) + np.array([draw.randint(-bound, bound) for _ in range(m)], dtype=object)
    ints[:2] = [vals[0] * (1 << delta_bits) + bound, vals[1] * (1 << delta_bits) - bound]

    def decode(xs, strict):
        res = np.array([[int(v) % p for v in xs] for p in primes], dtype=np.uint64)
        with monkeypatch.context() as mp:
            mp.setenv("SECUREFED_HE_KERNELS", "numpy")
            want = crt.decode_digits(primes, res, value_bits, k, delta_bits, float(bound), strict)
        return crt.decode_digits(primes, res, value_bits, k, delta_bits, float(bound), strict), want

    for strict in (True, False):
        got, want = decode(ints, strict)
        assert np.array_equal(got, want) and np.array_equal(got, digits.astype(np.int64))
    past = ints.copy()
    past[3] = vals[3] * (1 << delta_bits) - bound - 1
    wide = ints.copy()
    wide[4] = (vals[4] + (1 << (value_bits * k))) * (1 << delta_bits)
    garbage = [draw.randrange(q) for _ in range(m)]  # uniform mod Q
    for name, xs in (("past", past), ("wide", wide), ("garbage", garbage)):
        got, want = decode(xs, True)
        assert got is None and want is None, name
        got, want = decode(xs, False)
        assert np.array_equal(got, want)
