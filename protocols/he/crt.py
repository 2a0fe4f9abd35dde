"""Hazmat: rlwe.decode_message's integer arithmetic, vectorised over coefficients.

A coefficient's residues (one per prime) stand for one integer in (-Q/2, Q/2], Q < 2^224. Python
big integers took ~6 s for the 1.7M coefficients of an 8.4M-parameter sum; here each integer is
NLIMBS 32-bit limbs (two's complement mod 2^256), one uint64 array per limb, and every step is a
few numpy passes per limb:

    Garner's mixed radix   x = y0 + y1 p0 + y2 p0 p1 + ...   (y_i < p_i, from modular products)
    Horner into limbs      X = (..(y_{L-1} p_{L-2} + y_{L-2}) p_{L-3} + ..) p0 + y0, in [0, Q)
    centre                 X - Q where X > Q/2
    round                  R = X + Delta/2: V = R >> delta (arithmetic), residual = R mod Delta - Delta/2
    balanced digits        d = ((V + h) mod 2^b) - h, V = (V + h) >> b, k times (h = 2^(b-1))

the same operations as the Python-integer version, so the same results (tests compare both).
With numba and reduced residues, kernels.crt_digits runs these steps on the same limbs a chunk at a
time, fused (no array per step; tested equal); these numpy passes are the reference and fallback.
"""

from __future__ import annotations

import numpy as np

from securefed.protocols.he.ntt import compiled_kernels

NLIMBS = 8
_MASK = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)
_CHUNK = 1 << 16  # coefficients per pass: the limbs of a chunk stay in cache


def _const(v: int) -> list[np.uint64]:
    """v mod 2^256 as limbs."""
    v %= 1 << (32 * NLIMBS)
    return [np.uint64((v >> (32 * i)) & 0xFFFFFFFF) for i in range(NLIMBS)]


def _add_const(x: list[np.ndarray], c: int) -> list[np.ndarray]:
    out, carry = [], np.uint64(0)
    for xi, ci in zip(x, _const(c)):
        t = xi + ci + carry
        out.append(t & _MASK)
        carry = t >> _S32
    return out


def _shift_right(x: list[np.ndarray], s: int) -> list[np.ndarray]:
    """Arithmetic shift (floor division by 2^s) of two's-complement limbs."""
    q, r = divmod(s, 32)
    fill = np.where(x[-1] >> np.uint64(31), _MASK, np.uint64(0))
    src = x[q:] + [fill] * (q + 1)
    if r == 0:
        return src[:NLIMBS]
    return [((src[i] >> np.uint64(r)) | (src[i + 1] << np.uint64(32 - r))) & _MASK for i in range(NLIMBS)]


def _low(x: list[np.ndarray], bits: int) -> np.ndarray:
    """x mod 2^bits as uint64 (bits <= 64)."""
    v = x[0] | (x[1] << _S32)
    return v if bits == 64 else v & np.uint64((1 << bits) - 1)


def _compare(x: list[np.ndarray], c: int, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(x mod 2^bits > c, x mod 2^bits == c) for 0 <= c < 2^bits."""
    n = -(-bits // 32)
    gt, eq = np.zeros(x[0].shape, bool), np.ones(x[0].shape, bool)
    for i in reversed(range(n)):
        xi = x[i] if 32 * (i + 1) <= bits else x[i] & np.uint64((1 << (bits - 32 * i)) - 1)
        ci = np.uint64((c >> (32 * i)) & 0xFFFFFFFF)
        gt |= eq & (xi > ci)
        eq &= xi == ci
    return gt, eq


def _centered(primes: tuple[int, ...], r: np.ndarray) -> list[np.ndarray]:
    """Residues (L, M) -> limbs of the integer in (-Q/2, Q/2] they stand for."""
    ps = [np.uint64(p) for p in primes]
    y = []
    for i, p in enumerate(ps):
        t = r[i].astype(np.uint64)
        for j in range(i):
            yj = np.where(y[j] >= p, y[j] - p, y[j])  # y_j < p_j < 2^31 < 2 p_i
            t = ((t + p - yj) * np.uint64(pow(primes[j], -1, primes[i]))) % p  # < 2p * 2^31 < 2^63
        y.append(t)
    x = [y[-1]] + [np.zeros_like(y[-1]) for _ in range(NLIMBS - 1)]
    for i in range(len(ps) - 2, -1, -1):
        carry = y[i]
        for j in range(NLIMBS):
            t = x[j] * ps[i] + carry  # < 2^32 * 2^31 + 2^32
            x[j] = t & _MASK
            carry = t >> _S32
    q = 1
    for p in primes:
        q *= p
    above, _ = _compare(x, q // 2, 32 * NLIMBS)  # x < Q < 2^255: unsigned compare
    minus_q = _const(-q)
    out, carry = [], np.uint64(0)
    for xi, ci in zip(x, minus_q):
        t = xi + np.where(above, ci, np.uint64(0)) + carry
        out.append(t & _MASK)
        carry = t >> _S32
    return out


def decode_digits(primes: tuple[int, ...], residues: np.ndarray, value_bits: int, k: int, delta_bits: int,
                  noise_bound: float, strict: bool) -> np.ndarray | None:
    """Residues (L, M) of Delta*V + noise -> balanced base-2^b digits (k, M) int64 of V =
    round(x / Delta), or None (strict) when some |x - Delta*V| > noise_bound or V needs more
    than k digits."""
    if not (1 <= value_bits <= 62 and 1 <= delta_bits <= 32 * NLIMBS - 32):
        raise ValueError("digit or scale width out of range")
    m = residues.shape[1]
    digits = np.empty((k, m), dtype=np.int64)
    half, hb = 1 << (delta_bits - 1), 1 << (value_bits - 1)
    bound = int(noise_bound)  # residuals are integers: |r| > noise_bound iff |r| > floor(noise_bound)
    kernels, p = compiled_kernels(), np.array(primes, dtype=np.uint64)
    if kernels is not None and np.all(residues < p[:, None]):  # the kernel's Garner needs reduced residues
        q = 1
        for pi in primes:
            q *= pi
        limbs = [np.array(_const(c), dtype=np.uint64) for c in (q // 2, -q, half, hb, half + bound, half - bound)]
        garner = np.array([[pow(pj, -1, pi) if j < i else 0 for j, pj in enumerate(primes)]
                           for i, pi in enumerate(primes)], dtype=np.uint64)  # p_j^-1 mod p_i
        ok = kernels.crt_digits(residues, p, garner, (garner << np.uint64(32)) // p[:, None], *limbs[:4],
                                strict and bound < half, *limbs[4:], strict, delta_bits, value_bits, digits)
        return digits if ok else None
    for start in range(0, m, _CHUNK):
        stop = min(m, start + _CHUNK)
        rounded = _add_const(_centered(primes, residues[:, start:stop]), half)
        if strict and bound < half:  # residual = (rounded mod Delta) - half, must be in [-bound, bound]
            gt, _ = _compare(rounded, half + bound, delta_bits)
            lt_gt, lt_eq = _compare(rounded, half - bound, delta_bits)
            if np.any(gt) or not np.all(lt_gt | lt_eq):
                return None
        v = _shift_right(rounded, delta_bits)
        for j in range(k):
            v = _add_const(v, hb)
            digits[j, start:stop] = _low(v, value_bits).astype(np.int64) - hb
            v = _shift_right(v, value_bits)
        if strict and any(np.any(limb) for limb in v):
            return None
    return digits
