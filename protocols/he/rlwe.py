"""RLWE building blocks for sums (hazmat, on ring.py): packing of fixed-point values into ring
coefficients and the decoder, noise flooding, Shamir sharing per prime, and the public-key scheme
of the previous threshold design (encrypt / partial_decrypt under a collective key), kept because
the SEAL-interop and known-answer tests pin the ring layer with it. The threshold design itself is
protocols/he/threshold/scheme.py.

Packing: k signed fixed-point values of b bits (b from the secagg codec, sized so the n-party sum
of each value stays inside (-2^(b-1), 2^(b-1))) form one coefficient V = sum_j d_j 2^(b j):
balanced base-2^b digits do not carry into each other, so the sum of V's decodes digit by digit.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Callable

import numpy as np

from securefed.protocols.he import crt
from securefed.protocols.he.ring import PRIMES_8192, ByteSource, Ring, sample_bounded, sample_cbd, sample_ternary, shake_residues

N_DEFAULT = 8192
# Threads for the per-ciphertext work of encrypt / partial_decrypt. 1: on the shared 2-core dev
# machine (Linux autogroup scheduling, other sessions busy) a second thread measured 0.9-1.1x;
# a party with idle cores may set 2 or more (outputs are the same: randomness is drawn first).
THREADS = 1


@lru_cache(maxsize=4)
def ring_for(n: int = N_DEFAULT, primes: tuple[int, ...] = PRIMES_8192) -> Ring:
    return Ring(n, primes)


# -- packing -------------------------------------------------------------------------------------


def values_per_coeff(budget: NoiseBudget, value_bits: int) -> int:
    k = budget.payload_bits // value_bits
    if k < 1:
        raise ValueError(f"{value_bits}-bit values do not fit the {budget.payload_bits} payload bits")
    return k


def encode_message(ring: Ring, values: np.ndarray, value_bits: int, k: int, delta_bits: int) -> np.ndarray:
    """Values (count,) int64, |v| < 2^(b-1) (or their two's complement in Z_2^b) -> Delta*V
    residues (n_ct, L, N), coefficient form."""
    n_ct, msg_of = message_of(ring, values, value_bits, k, delta_bits)
    return np.stack([msg_of(c) for c in range(n_ct)])


def message_of(ring: Ring, values: np.ndarray, value_bits: int, k: int, delta_bits: int
               ) -> tuple[int, Callable[[int], np.ndarray]]:
    """(n_ct, c -> ciphertext c's Delta*V residues (L, N)): encode_message one ciphertext at a
    time. V's coefficient i is sum_j d_j 2^(b j), digit j being values[c k N + j N + i]."""
    per_ct, p = k * ring.n, np.array(ring.primes, dtype=np.int64).reshape(-1, 1)  # p (L, 1)
    weights = np.array([[pow(2, delta_bits + value_bits * j, q) for j in range(k)] for q in ring.primes],
                       dtype=np.int64)  # (L, k), < 2^31
    centered = np.where(weights > p // 2, weights - p, weights)  # |w| < 2^30
    small = k * 2 ** (value_bits - 1) * 2**30 < 2**63  # then sum_j d_j w_j cannot overflow int64
    shift = np.int64(64 - value_bits)

    def msg(c: int) -> np.ndarray:
        d = np.zeros((k, ring.n), dtype=np.int64)
        chunk = values[c * per_ct : (c + 1) * per_ct]
        d.reshape(-1)[: chunk.size] = chunk
        d <<= shift  # Z_2^b (or signed) -> signed, |d| < 2^(b-1)
        d >>= shift
        if small:
            acc = d[0] * centered[:, :1]  # (L, N)
            for j in range(1, k):
                acc += d[j] * centered[:, j : j + 1]
            return np.remainder(acc, p).view(np.uint64)
        acc = np.zeros((ring.size, ring.n), dtype=np.int64)
        for j in range(k):
            acc = (acc + np.remainder(d[j], p) * weights[:, j : j + 1]) % p  # < 2^62 + 2^31
        return acc.view(np.uint64)

    return -(-values.size // per_ct), msg


def decode_message(ring: Ring, x: np.ndarray, value_bits: int, k: int, delta_bits: int,
                   noise_bound: float, strict: bool = True) -> np.ndarray | None:
    """Residues of Delta*V + noise (n_ct, L, N) -> digit sums (n_ct * k * N,) int64, or None when
    some coefficient's noise exceeds `noise_bound` or V exceeds k digits (not a sum of honest
    partial decryptions). strict=False returns the raw digits regardless (attack tests)."""
    n_ct = x.shape[0]
    residues = np.moveaxis(x, 1, 0).reshape(ring.size, -1)  # (L, n_ct*N)
    digits = crt.decode_digits(ring.primes, residues, value_bits, k, delta_bits, noise_bound, strict)
    if digits is None:
        return None
    return digits.reshape(k, n_ct, ring.n).transpose(1, 0, 2).reshape(-1)


# -- encryption, partial decryption ------------------------------------------------------------


def crs(ring: Ring, label: bytes) -> np.ndarray:
    """The public polynomial a (L, N), NTT form, from the key label: nobody picks it."""
    return shake_residues(ring, b"securefed-he-crs-v1|" + label, (ring.n,))


def keygen_share(ring: Ring, a_ntt: np.ndarray, rng: ByteSource) -> tuple[np.ndarray, np.ndarray]:
    """-> (s_i NTT form, b_i = -a*s_i + e_i NTT form), each (L, N)."""
    s = ring.ntt(ring.from_int64(sample_ternary(rng, (ring.n,))))
    e = ring.ntt(ring.from_int64(sample_cbd(rng, (ring.n,))))
    return s, ring.sub(e, ring.mul(a_ntt, s))


def encrypt(ring: Ring, a_ntt: np.ndarray, b_ntt: np.ndarray, msg: np.ndarray, rng: ByteSource
            ) -> tuple[np.ndarray, np.ndarray]:
    """Delta*V residues (n_ct, L, N) -> (c0 coefficient form, c1 NTT form), fresh u, e0, e1."""
    c0, c1 = np.empty_like(msg, dtype=np.uint64), np.empty_like(msg, dtype=np.uint64)

    def emit(c: int, x0: np.ndarray, x1: np.ndarray) -> None:
        c0[c], c1[c] = x0, x1

    encrypt_each(ring, a_ntt, b_ntt, msg.shape[0], lambda c: msg[c], rng, emit)
    return c0, c1


def encrypt_each(ring: Ring, a_ntt: np.ndarray, b_ntt: np.ndarray, n_ct: int, msg_of: Callable[[int], np.ndarray],
                 rng: ByteSource, emit: Callable[[int, np.ndarray, np.ndarray], None]) -> None:
    """emit(c, c0, c1) for each ciphertext c (from worker threads, in any order): c1 = a*u + e1
    (NTT form), c0 = INTT(b*u) + e0 + msg_of(c). Three transforms per ciphertext, the minimum
    (u and e1 forward, b*u back), one ciphertext at a time so that its L x N words stay in cache:
    sweeping (n_ct, L, N) arrays through memory per operation cost more than the transforms.
    Randomness is drawn first, as a whole, in a fixed order."""
    u = sample_ternary(rng, (n_ct, ring.n))
    e1 = sample_cbd(rng, (n_ct, ring.n))
    e0 = sample_cbd(rng, (n_ct, ring.n))
    fa, fb, plan = ring.fixed(a_ntt), ring.fixed(b_ntt), ring._plan

    def one(c: int) -> None:
        uc = ring.from_small(u[c])
        plan.forward(uc)
        ec = ring.from_small(e1[c])
        plan.forward(ec)
        x = ring.mul_fixed(uc, fa)  # uint64 < 2p
        x += ec
        y = ring.reduce(ring.mul_fixed(uc, fb), 2, out=np.empty_like(uc))  # uint32 < p
        plan.inverse(y)
        y += ring.from_small(e0[c])  # < 2p < 2^32
        emit(c, ring.reduce(msg_of(c) + y, 4), ring.reduce(x, 4))  # both < 3p

    each_ciphertext(n_ct, one)


def partial_decrypt(ring: Ring, c1_ntt: np.ndarray, share_ntt: np.ndarray, flood_bits: int,
                    rng: ByteSource) -> np.ndarray:
    """c1 * share + flooding, coefficient form (n_ct, L, N)."""
    out = np.empty(c1_ntt.shape, dtype=np.uint64)

    def emit(c: int, d: np.ndarray) -> None:
        out[c] = d

    partial_decrypt_each(ring, c1_ntt.shape[0], lambda c: c1_ntt[c], share_ntt, flood_bits, rng, emit)
    return out


def partial_decrypt_each(ring: Ring, n_ct: int, c1_of: Callable[[int], np.ndarray], share_ntt: np.ndarray,
                         flood_bits: int, rng: ByteSource, emit: Callable[[int, np.ndarray], None]) -> None:
    """emit(c, INTT(c1_of(c) * share) + flooding) for each ciphertext c (from worker threads, in
    any order): one inverse transform per ciphertext. c1_of(c) gives reduced residues (L, N)."""
    hi, lo = flood_draw(ring, rng, n_ct, flood_bits)
    fs, plan = ring.fixed(share_ntt), ring._plan

    def one(c: int) -> None:
        x = ring.mul_fixed(c1_of(c), fs)  # uint64 < 2p
        y = ring.reduce(x, 2, out=np.empty(x.shape, dtype=np.uint32))
        plan.inverse(y)
        emit(c, ring.reduce(flood_ct(ring, hi[c], lo[c]) + y, 2))

    each_ciphertext(n_ct, one)


def each_ciphertext(n_ct: int, fn: Callable[[int], None]) -> None:
    """fn(0), ..., fn(n_ct - 1) on THREADS threads (numpy releases the GIL inside its loops, and
    each thread has its own NTT scratch); fn writes disjoint outputs and draws no randomness."""
    workers = min(THREADS, n_ct)
    if workers <= 1:
        for c in range(n_ct):
            fn(c)
        return

    def stripe(i: int) -> None:
        for c in range(i, n_ct, workers):
            fn(c)
    with ThreadPoolExecutor(workers) as pool:
        for f in [pool.submit(stripe, i) for i in range(workers)]:
            f.result()


def flooding(ring: Ring, rng: ByteSource, n_ct: int, bits: int) -> np.ndarray:
    """Uniform integers in [-2^bits, 2^bits) as residues (n_ct, L, N)."""
    hi, lo = flood_draw(ring, rng, n_ct, bits)
    return np.stack([flood_ct(ring, hi[c], lo[c]) for c in range(n_ct)])


def flood_draw(ring: Ring, rng: ByteSource, n_ct: int, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """hi * 2^32 + lo with hi uniform in [-2^(bits-32), 2^(bits-32)) (n_ct, N) int64 and lo
    uniform 32 bits (n_ct, N) uint64."""
    hi = sample_bounded(rng, (n_ct, ring.n), bits - 32)
    lo = np.frombuffer(rng(4 * n_ct * ring.n), dtype="<u4").astype(np.uint64).reshape(n_ct, ring.n)
    return hi, lo


def flood_ct(ring: Ring, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """hi * 2^32 + lo (N,) -> residues (L, N), reduced."""
    p = np.array(ring.primes, dtype=np.int64).reshape(-1, 1)
    h = np.remainder(hi[None, :], p).view(np.uint64)  # (L, N), < p
    x = ring.mul_fixed(h, ring.fixed(_const(ring, 1 << 32).reshape(-1, 1)))  # < 2p
    x += lo  # lo < 2^32 < 3p
    return ring.reduce(x, 8)


# -- Shamir sharing over each prime ------------------------------------------------------------


def shamir_deal(ring: Ring, secret: np.ndarray, xs: tuple[int, ...], t: int, rng: ByteSource) -> list[np.ndarray]:
    """Shares f(x) of the (L, N) secret for each x, f of degree t-1 with f(0) = secret."""
    coeffs = [ring.uniform(rng) for _ in range(t - 1)]
    out = []
    for x in xs:
        acc = np.zeros_like(secret)
        for c in reversed(coeffs):  # Horner
            acc = ring.add(ring.scalar_mul(acc, _const(ring, x)), c)
        out.append(ring.add(ring.scalar_mul(acc, _const(ring, x)), secret))
    return out


def lagrange_at_zero(ring: Ring, x: int, xs: tuple[int, ...]) -> np.ndarray:
    """lambda_x for interpolation at 0 over the points xs, one residue per prime (L,)."""
    out = []
    for p in ring.primes:
        num, den = 1, 1
        for y in xs:
            if y != x:
                num, den = num * y % p, den * (y - x) % p
        out.append(num * pow(den, -1, p) % p)
    return np.array(out, dtype=np.uint64)


def _const(ring: Ring, c: int) -> np.ndarray:
    return np.array([c % p for p in ring.primes], dtype=np.uint64)
