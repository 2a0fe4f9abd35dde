"""Hazmat: arithmetic in R_Q = Z_Q[X]/(X^N + 1), Q a product of NTT-friendly 31-bit primes (RNS).

Why our own ring layer: threshold decryption needs `c1 * s_i` for a secret-key *share*, Shamir
shares of key shares, noise flooding and public-key encryption under a key assembled from parties'
shares; TenSEAL/SEAL expose none of these. What this module does is textbook RLWE arithmetic with
public parameters only; it is tested against SEAL (the same negacyclic product, and encryptions
that SEAL decrypts and vice versa: tests/protocols/test_he_ring.py).

Representation: a ring element is an array (..., L, N) uint64 of residues, one row per prime.
"NTT form" is the negacyclic number-theoretic transform of each row (pointwise products there are
ring products). Every prime is < 2**31, so a product of two residues fits in uint64.

The hot pointwise operations (mul_fixed, reduce, from_small, add_to, mod_p) and the NTT run as numba
kernels (kernels.py: the same operations in the same words, fused into one loop) for operands of
the usual (..., L, N) C-contiguous shapes, and as the numpy passes below otherwise or without numba.

Randomness enters only through `rng(n) -> n bytes` (os.urandom in production, a test stream in
tests); samplers turn bytes into ternary, centered-binomial, bounded-uniform and mod-p values.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from typing import Callable

import numpy as np

from securefed.protocols.he.ntt import _U32, NTTPlan, compiled_kernels, shoup_companion

ByteSource = Callable[[int], bytes]

# The 7 largest primes p < 2**31 with p = 1 mod 2N for N = 8192 (also = 1 mod 2N for smaller N):
# log2 Q = 216.997 <= 218, the HomomorphicEncryption.org bound for 128-bit security at N = 8192
# with ternary secrets.
PRIMES_8192 = (2147352577, 2147205121, 2147074049, 2146959361, 2146713601, 2146418689, 2146336769)
CBD_ETA = 21  # centered binomial noise: variance eta/2 = 10.5 (sd 3.24, SEAL's 3.2), |e| <= 21


def _bitrev(i: int, bits: int) -> int:
    return int(format(i, f"0{bits}b")[::-1], 2) if bits else 0


def _root_of_unity(p: int, order: int) -> int:
    """The smallest primitive `order`-th root of unity mod p (order a power of two dividing p - 1):
    SEAL's choice, so that our NTT form is bit-for-bit SEAL's (tested)."""
    for g in range(2, p):
        w = pow(g, (p - 1) // order, p)
        if pow(w, order // 2, p) == p - 1:
            break
    else:
        raise ValueError(f"no primitive {order}-th root of unity mod {p}")
    best, x, w2 = w, w, w * w % p
    for _ in range(order // 2 - 1):  # the primitive roots are the odd powers of w
        x = x * w2 % p
        best = min(best, x)
    return best


@dataclass(frozen=True)
class Ring:
    n: int  # N, a power of two
    primes: tuple[int, ...]  # L primes, each < 2**31 and = 1 mod 2N

    def __post_init__(self) -> None:
        if self.n < 2 or self.n & (self.n - 1):
            raise ValueError(f"ring degree must be a power of two, got {self.n}")
        for p in self.primes:
            if not (2**20 < p < 2**31 and (p - 1) % (2 * self.n) == 0):
                raise ValueError(f"prime {p} is not an NTT-friendly 31-bit prime for N={self.n}")

    @property
    def size(self) -> int:
        return len(self.primes)

    @cached_property
    def modulus(self) -> int:
        q = 1
        for p in self.primes:
            q *= p
        return q

    @cached_property
    def _p(self) -> np.ndarray:
        return np.array(self.primes, dtype=np.uint64).reshape(-1, 1)  # (L, 1)

    @cached_property
    def _k(self):
        """kernels.py, or None (no numba, or SECUREFED_HE_KERNELS=numpy)."""
        return compiled_kernels()

    def _fits(self, *arrays: np.ndarray) -> bool:
        """All C-contiguous uint32/uint64 (..., L, N) arrays, and the kernels loaded."""
        return self._k is not None and all(
            a.flags.c_contiguous and a.ndim >= 2 and a.shape[-2:] == (self.size, self.n)
            and a.dtype in (np.uint32, np.uint64) for a in arrays)

    @cached_property
    def _p1(self) -> np.ndarray:
        return np.ascontiguousarray(self._p[:, 0])  # (L,) uint64, the kernels' p

    @cached_property
    def _tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """zeta[l, k] = psi_l^bitrev(k) (psi a primitive 2N-th root), the same for psi^-1, and
        N^-1 mod p (L, 1)."""
        bits = self.n.bit_length() - 1
        z = np.empty((self.size, self.n), dtype=np.uint64)
        zi = np.empty_like(z)
        ninv = np.empty((self.size, 1), dtype=np.uint64)
        for l, p in enumerate(self.primes):
            psi = _root_of_unity(p, 2 * self.n)
            psi_inv = pow(psi, p - 2, p)
            pw = [1] * self.n
            pwi = [1] * self.n
            for k in range(1, self.n):
                pw[k], pwi[k] = pw[k - 1] * psi % p, pwi[k - 1] * psi_inv % p
            z[l] = [pw[_bitrev(k, bits)] for k in range(self.n)]
            zi[l] = [pwi[_bitrev(k, bits)] for k in range(self.n)]
            ninv[l, 0] = pow(self.n, p - 2, p)
        return z, zi, ninv

    # -- modular helpers (inputs < 2p unless said otherwise) ------------------------------------

    def add(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        r = x + y
        return np.minimum(r, r - self._p)  # r - p wraps around when r < p

    def add_to(self, acc: np.ndarray, x: np.ndarray) -> None:
        """acc += x mod p in place, for (..., L, N) batches: one ring element at a time, so no
        temporary of the batch's size (fresh ~100 MB arrays cost more than the additions)."""
        if acc.dtype != np.uint64:
            raise TypeError("add_to accumulates in uint64 (sums of residues need 32 bits and a carry)")
        if acc.shape == x.shape and self._fits(acc, x) and not np.may_share_memory(acc, x):
            self._k.add_to(acc.reshape(-1, self.size, self.n), x.reshape(-1, self.size, self.n), self._p1)
            return
        t = np.empty((self.size, self.n), dtype=np.uint64)
        for a, b in zip(acc.reshape(-1, self.size, self.n), x.reshape(-1, self.size, self.n)):
            np.add(a, b, out=a)
            np.subtract(a, self._p, out=t)
            np.minimum(a, t, out=a)

    def sub(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.add(x, self._p - y)

    def mul(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Pointwise product of reduced residues (a ring product when both are in NTT form)."""
        return (x * y) % self._p

    def scalar_mul(self, x: np.ndarray, c: np.ndarray) -> np.ndarray:
        """x (..., L, N) times one residue per prime c (L,)."""
        return (x * c.astype(np.uint64).reshape(-1, 1)) % self._p

    def fixed(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A reduced operand (L, N) that multiplies many others (a key, the CRS): (w, its Shoup
        companion floor(w * 2^32 / p)), for `mul_fixed`."""
        w = np.ascontiguousarray(w, dtype=np.uint64)
        return w, shoup_companion(w, self._p)

    def mul_fixed(self, x: np.ndarray, w: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """x * w mod p for x (..., L, N) < 2^32 without a division, result in [0, 2p): `fixed`'s
        q = floor(x * w' / 2^32) underestimates x*w/p by less than 2, and r = x*w - q*p is exact
        mod 2^64 (Shoup's multiplication)."""
        if self._fits(x, *w) and all(a.ndim == 2 and a.dtype == np.uint64 for a in w):
            out = np.empty(x.shape, np.uint64)
            L, n = self.size, self.n
            self._k.mul_shoup(x.reshape(-1, L, n), w[0], w[1], self._p1, out.reshape(-1, L, n))
            return out
        q = x * w[1]
        q >>= _U32
        q *= self._p
        r = x * w[0]
        r -= q
        return r

    def reduce(self, x: np.ndarray, below: int = 2, out: np.ndarray | None = None) -> np.ndarray:
        """x (..., L, N) < below * p (below a power of two) -> [0, p), into `out` (default: x)."""
        out = x if out is None else out
        if below in (2, 4, 8) and out.shape == x.shape and self._fits(x, out):
            L, n, m32, m64 = self.size, self.n, np.uint64(0xFFFFFFFF), np.uint64(2**64 - 1)
            tm, om = (m32 if a.dtype == np.uint32 else m64 for a in (x, out))
            if out is x:
                self._k.reduce_in_place(x.reshape(-1, L, n), self._p1, below, tm)
                return out
            if not np.may_share_memory(x, out):  # (other overlaps: numpy's passes, below)
                self._k.reduce_below(x.reshape(-1, L, n), out.reshape(-1, L, n), self._p1, below, tm, om)
                return out
        t = np.empty_like(x)
        while below > 1:
            below //= 2
            np.subtract(x, self._p * np.uint64(below), out=t)
            np.minimum(x, t, out=out)  # x - below*p wraps around when x < below*p
            x = out
        return out

    # -- NTT -----------------------------------------------------------------------------------

    def ntt(self, a: np.ndarray) -> np.ndarray:
        """Negacyclic NTT of (..., L, N) reduced residues (Cooley-Tukey, in SEAL's bit-reversed
        order). One ring element at a time: its L x N words stay in cache across the log N
        stages (a whole batch swept through memory per stage is several times slower)."""
        x = self._words(a)
        for elem in x.reshape(-1, self.size, self.n):
            self._plan.forward(elem)
        return x.astype(np.uint64)

    def intt(self, a: np.ndarray) -> np.ndarray:
        """Inverse of `ntt`."""
        x = self._words(a)
        for elem in x.reshape(-1, self.size, self.n):
            self._plan.inverse(elem)
        return x.astype(np.uint64)

    def _words(self, a: np.ndarray) -> np.ndarray:
        """A uint32 copy of reduced residues (the NTT plan's working type); ValueError otherwise."""
        if np.any(np.asarray(a) >= self._p):
            raise ValueError("ring element has unreduced residues")
        return np.array(a, dtype=np.uint32, copy=True, order="C")

    @cached_property
    def _plan(self) -> NTTPlan:
        return NTTPlan(self.primes, self.n, *self._tables)

    # -- conversions ---------------------------------------------------------------------------

    def from_small(self, x: np.ndarray) -> np.ndarray:
        """Signed integers |x| < p (..., N) -> residues (..., L, N) as uint32, without a division:
        x + p (mod 2^32) lies in (0, 2p), one conditional subtraction reduces it."""
        if self._k is not None and x.dtype == np.int64 and x.flags.c_contiguous and x.ndim >= 1 and x.shape[-1] == self.n:
            out = np.empty((*x.shape[:-1], self.size, self.n), np.uint32)
            self._k.from_small(x.reshape(-1, self.n), self._p1, out.reshape(-1, self.size, self.n))
            return out
        p = self._p.astype(np.uint32)
        r = x[..., None, :].astype(np.uint32) + p
        return np.minimum(r, r - p, out=r)

    def from_int64(self, x: np.ndarray) -> np.ndarray:
        """Signed integers (..., N) -> residues (..., L, N)."""
        p = np.array(self.primes, dtype=np.int64).reshape(-1, 1)
        return np.mod(x[..., None, :].astype(np.int64), p).astype(np.uint64)

    def to_centered_ints(self, x: np.ndarray) -> np.ndarray:
        """Residues (L, M) -> object array (M,) of Python ints in (-Q/2, Q/2] (CRT)."""
        q = self.modulus
        acc = np.zeros(x.shape[-1], dtype=object)
        for l, p in enumerate(self.primes):
            qi = q // p
            c = qi * pow(qi, -1, p)  # = 1 mod p, 0 mod the other primes
            acc = acc + x[l].astype(object) * c
        acc = acc % q
        return np.where(acc > q // 2, acc - q, acc)

    # -- sampling (bytes from the caller's CSPRNG) --------------------------------------------

    def uniform(self, rng: ByteSource, lead: tuple[int, ...] = ()) -> np.ndarray:
        """Uniform residues (*lead, L, N): 64 random bits reduced mod p (bias < 2^-33)."""
        count = int(np.prod(lead, dtype=np.int64)) * self.size * self.n
        raw = np.frombuffer(rng(8 * count), dtype="<u8").reshape(*lead, self.size, self.n)
        return self.mod_p(raw)

    def mod_p(self, raw: np.ndarray) -> np.ndarray:
        """raw % p for 64-bit words (..., L, W), one prime per row of L (a division per word in
        numpy; kernels.mod_words needs none)."""
        if self._k is None or raw.dtype != np.uint64 or raw.ndim < 2 or raw.shape[-2] != self.size or raw.size == 0:
            return raw % self._p
        x = np.ascontiguousarray(raw)
        out = np.empty(x.shape, np.uint64)
        shape = (-1, self.size, x.shape[-1])
        self._k.mod_words(x.reshape(shape), self._p1, *self._mod_consts, out.reshape(shape))
        return out

    @cached_property
    def _mod_consts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """kernels.mod_words's 2^32 mod p (L,), its Shoup companions, and 1/p in float64."""
        c = np.array([(1 << 32) % p for p in self.primes], dtype=np.uint64)
        return c, shoup_companion(c, self._p1), 1.0 / self._p1.astype(np.float64)


def sample_ternary(rng: ByteSource, shape: tuple[int, ...]) -> np.ndarray:
    """Uniform {-1, 0, 1} as int64 (32 random bits mod 3: bias < 2^-31)."""
    count = int(np.prod(shape, dtype=np.int64))
    raw = np.frombuffer(rng(4 * count), dtype="<u4").reshape(shape)
    return (raw % 3).astype(np.int64) - 1


def sample_cbd(rng: ByteSource, shape: tuple[int, ...], eta: int = CBD_ETA) -> np.ndarray:
    """Centered binomial: popcount(eta bits) - popcount(eta bits), as int64; |e| <= eta."""
    count = int(np.prod(shape, dtype=np.int64))
    raw = np.frombuffer(rng(8 * count), dtype="<u8").reshape(shape)
    mask = np.uint64((1 << eta) - 1)
    a = np.bitwise_count(raw & mask).astype(np.int64)
    b = np.bitwise_count((raw >> np.uint64(eta)) & mask).astype(np.int64)
    return a - b


def sample_bounded(rng: ByteSource, shape: tuple[int, ...], bits: int) -> np.ndarray:
    """Uniform integers in [-2^bits, 2^bits) as int64 (bits <= 61): flooding noise."""
    if not 1 <= bits <= 61:
        raise ValueError(f"flooding width {bits} bits outside [1, 61]")
    count = int(np.prod(shape, dtype=np.int64))
    raw = np.frombuffer(rng(8 * count), dtype="<u8").reshape(shape)
    return (raw >> np.uint64(63 - bits)).astype(np.int64) - (1 << bits)


def shake_residues(ring: Ring, seed: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """Public pseudorandom residues (*shape, L) or (*shape, L, N) from SHAKE-256(seed): the common
    polynomial `a` of the public key and the Fiat-Shamir challenges. shape ends where residues
    start: the result has shape (*shape, L, width) with width = shape's last entry."""
    *lead, width = shape
    count = int(np.prod(lead, dtype=np.int64)) * ring.size * width
    raw = np.frombuffer(hashlib.shake_256(seed).digest(8 * count), dtype="<u8")
    return ring.mod_p(raw.reshape(*lead, ring.size, width))
