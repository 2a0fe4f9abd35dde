"""Hazmat: the ring's hot loops compiled with numba: ntt.py's negacyclic NTT (the same stages,
layouts and twiddles), ring.py's pointwise Shoup products and reductions, crt.py's decode.

Why numba: numpy spends ~10 array sweeps per butterfly stage (and one per limb operation in the
decode), so its time is memory traffic. A compiled loop keeps the operands in registers and takes
one prime's log N stages over its N words while they sit in cache (32 KiB per prime at N = 8192).
numba has wheels for CPython 3.10-3.13 on manylinux x86_64 and aarch64, is maintained, and
compiles plain loops, so each kernel reads as the numpy code it replaces; python-flint's NTTs use
FLINT's roots and order, not SEAL's, and would need a reordering pass per transform. Kernels
compile on first call and are cached on disk (`cache=True`: __pycache__ beside this file, else
numba's user cache), so a fresh process loads them instead of compiling; they release the GIL, so
rlwe's threads overlap. Every kernel computes the same words as its numpy reference, which stays
as the fallback (ntt.compiled_kernels); tests/protocols/test_he_kernels.py compares them.

NTT layout, as in ntt.py: with N = B * S, the first log B stages pair words >= S apart and run on
the natural (B, S) layout of a prime's row; the last log S stages run on its transpose (S, B),
so that every innermost loop runs over >= min(S, B) contiguous words (the vectoriser needs
contiguous runs; pairs 1 or 2 words apart would run scalar, ~5x slower per butterfly).

NTT arithmetic: residues are reduced uint32 (p < 2^31) widened to int64 in registers: x * w' <
2^63 for Shoup's companion w' = floor(w 2^32 / p) < 2^32, so q = (x w') >> 32 and r = x w - q p
in [0, 2p) need no uint64 (numba turns uint64 mixed with int64 into float64). Every stage leaves
[0, p), so the output is the unique reduced transform, as the numpy passes' is.
"""

from __future__ import annotations

import numba
import numpy as np

_jit = numba.njit(cache=True, nogil=True, boundscheck=False)


@_jit
def _mulmod(x, w, wq, p):
    """x * w mod p in [0, p) (Shoup) for x < 2^31, w < p, wq = floor(w 2^32 / p)."""
    t = x * w - ((x * wq) >> 32) * p
    return t - p if t >= p else t


@_jit
def _ct_word(a, b, w, wq, p):
    """Cooley-Tukey on one pair: (a, b) -> (a + w b, a - w b) mod p."""
    t = _mulmod(b, w, wq, p)
    s, d = a + t, a - t
    return (s - p if s >= p else s), (d + p if d < 0 else d)


@_jit
def _gs_word(a, b, w, wq, p, scale, scale_q):
    """Gentleman-Sande on one pair: (a, b) -> (a + b, (a - b) w) mod p; the sum times `scale`
    unless scale == 1 (the inverse's last stage folds N^-1 in)."""
    s, d = a + b, a - b
    s = s - p if s >= p else s
    d = d + p if d < 0 else d
    if scale != 1:
        s = _mulmod(s, scale, scale_q, p)
    return s, _mulmod(d, w, wq, p)


@_jit
def _ct(lo, hi, w, wq, p):
    """Cooley-Tukey over two runs with one twiddle."""
    for j in range(lo.shape[0]):
        lo[j], hi[j] = _ct_word(np.int64(lo[j]), np.int64(hi[j]), w, wq, p)


@_jit
def _ct_runs(lo, hi, w, wq, p):
    """Cooley-Tukey over two runs with a twiddle per word (w, wq runs of uint32)."""
    for j in range(lo.shape[0]):
        lo[j], hi[j] = _ct_word(np.int64(lo[j]), np.int64(hi[j]), np.int64(w[j]), np.int64(wq[j]), p)


@_jit
def _gs(lo, hi, w, wq, p, scale, scale_q):
    """Gentleman-Sande over two runs with one twiddle."""
    for j in range(lo.shape[0]):
        lo[j], hi[j] = _gs_word(np.int64(lo[j]), np.int64(hi[j]), w, wq, p, scale, scale_q)


@_jit
def _gs_runs(lo, hi, w, wq, p, scale, scale_q):
    """Gentleman-Sande over two runs with a twiddle per word."""
    for j in range(lo.shape[0]):
        lo[j], hi[j] = _gs_word(np.int64(lo[j]), np.int64(hi[j]), np.int64(w[j]), np.int64(wq[j]), p, scale, scale_q)


@_jit
def _transpose(src, dst):
    """dst (C, R) = src (R, C)^T."""
    for r in range(src.shape[0]):
        for c in range(src.shape[1]):
            dst[c, r] = src[r, c]


@_jit
def forward(x, tr, w, wq, tw, twq, p):
    """x (L, N) uint32 reduced, in place -> NTT form. tr (S, B) uint32 scratch. w, wq (L, N):
    psi^bitrev(k) and companions; natural stage m pairs j, j + N/(2m) in block i with w[m + i].
    tw, twq (L, N - B): the transposed stages' twiddles, stage after stage, (G, B) each.
    p (L,) int64."""
    L, n = x.shape
    S, B = tr.shape
    for l in range(L):
        pl, xl = p[l], x[l]
        m, half = 1, n >> 1
        while m < B:
            for i in range(m):
                base = 2 * i * half
                _ct(xl[base:base + half], xl[base + half:base + 2 * half], np.int64(w[l, m + i]),
                    np.int64(wq[l, m + i]), pl)
            m, half = m << 1, half >> 1
        _transpose(xl.reshape(B, S), tr)
        off = 0
        while half >= 1:  # h = half rows of B words; G = S / (2h) groups
            g = S // (2 * half)
            for gi in range(g):
                wr, wqr = tw[l, off + gi * B:off + (gi + 1) * B], twq[l, off + gi * B:off + (gi + 1) * B]
                for hh in range(half):
                    _ct_runs(tr[2 * gi * half + hh], tr[(2 * gi + 1) * half + hh], wr, wqr, pl)
            off += g * B
            half >>= 1
        _transpose(tr, xl.reshape(B, S))


@_jit
def inverse(x, tr, w, wq, tw, twq, p, n_inv, n_inv_q):
    """x (L, N) uint32 in NTT form, in place -> coefficients, reduced. The tables as in `forward`
    for psi^-1, with the last stage's twiddle (w[:, 1], or tw's first block when B = 1) already
    times N^-1; that stage also scales its sums by n_inv (L,) (companions n_inv_q)."""
    L, n = x.shape
    S, B = tr.shape
    for l in range(L):
        pl, xl = p[l], x[l]
        _transpose(xl.reshape(B, S), tr)
        off, half = tw.shape[1] - (S // 2) * B, 1  # stages in reverse: the last stored comes first
        while half < S:
            g = S // (2 * half)
            sc, scq = (n_inv[l], n_inv_q[l]) if (B == 1 and g == 1) else (np.int64(1), np.int64(0))
            for gi in range(g):
                wr, wqr = tw[l, off + gi * B:off + (gi + 1) * B], twq[l, off + gi * B:off + (gi + 1) * B]
                for hh in range(half):
                    _gs_runs(tr[2 * gi * half + hh], tr[(2 * gi + 1) * half + hh], wr, wqr, pl, sc, scq)
            half <<= 1
            off -= S // (2 * half) * B
        _transpose(tr, xl.reshape(B, S))
        m = B >> 1
        while m >= 1:
            half = n // (2 * m)
            sc, scq = (n_inv[l], n_inv_q[l]) if m == 1 else (np.int64(1), np.int64(0))
            for i in range(m):
                base = 2 * i * half
                _gs(xl[base:base + half], xl[base + half:base + 2 * half], np.int64(w[l, m + i]),
                    np.int64(wq[l, m + i]), pl, sc, scq)
            m >>= 1


# -- pointwise: ring.py's mul_fixed, reduce, from_small and add_to, word for word ----------------
# The same operations in the same types (uint64 wrapping, uint32 words kept by masks), fused into
# one loop per element instead of one numpy pass (and temporary) per operation. Operands are
# (K, L, N) C-contiguous; ring.py takes the numpy route for any other shape.

_S32 = np.uint64(32)
_M32 = np.uint64(0xFFFFFFFF)


@_jit
def mul_shoup(x, w, wq, p, out):
    """out = x w - floor(x wq / 2^32) p mod 2^64 (Shoup's product, [0, 2p) for x < 2^32)."""
    K, L, n = x.shape
    for k in range(K):
        for l in range(L):
            pl, xr, wr, wqr, o = p[l], x[k, l], w[l], wq[l], out[k, l]
            for j in range(n):
                v = np.uint64(xr[j])
                o[j] = v * wr[j] - ((v * wqr[j]) >> _S32) * pl


@_jit
def _reduce_word(v, below, c4, c2, c1, tmask, omask):
    """ring.reduce on one word: v = min(v, v - b p) for b = below/2, .., 1 (below in 2, 4, 8), the
    difference in x's word (tmask), v kept in out's word (omask), as numpy's passes do."""
    if below == 8:
        v = min(v, (v - c4) & tmask) & omask
    if below >= 4:
        v = min(v, (v - c2) & tmask) & omask
    return min(v, (v - c1) & tmask) & omask


@_jit
def reduce_below(x, out, p, below, tmask, omask):
    """out = ring.reduce(x, below) for x and out apart (see `reduce_in_place` for x is out)."""
    K, L, n = x.shape
    for k in range(K):
        for l in range(L):
            pl, s, o = p[l], x[k, l], out[k, l]
            for j in range(n):
                o[j] = _reduce_word(np.uint64(s[j]), below, pl * np.uint64(4), pl * np.uint64(2), pl, tmask, omask)


@_jit
def reduce_in_place(x, p, below, mask):
    """x = ring.reduce(x, below): one array, so the vectoriser needs no overlap check (which an
    exact overlap fails, leaving the loop scalar)."""
    K, L, n = x.shape
    for k in range(K):
        for l in range(L):
            pl, s = p[l], x[k, l]
            for j in range(n):
                s[j] = _reduce_word(np.uint64(s[j]), below, pl * np.uint64(4), pl * np.uint64(2), pl, mask, mask)


@_jit
def from_small(x, p, out):
    """out[k, l] = x[k] + p_l mod 2^32, less p_l where that does not wrap (ring.from_small)."""
    K, n = x.shape
    for k in range(K):
        for l in range(p.shape[0]):
            pl, xr, o = p[l], x[k], out[k, l]
            for j in range(n):
                r = (np.uint64(xr[j]) + pl) & _M32
                o[j] = min(r, (r - pl) & _M32)


@_jit
def add_to(acc, x, p):
    """acc = min(acc + x, acc + x - p) mod 2^64, in place (ring.add_to)."""
    K, L, n = acc.shape
    for k in range(K):
        for l in range(L):
            pl, a, xr = p[l], acc[k, l], x[k, l]
            for j in range(n):
                v = a[j] + np.uint64(xr[j])
                a[j] = min(v, v - pl)



@_jit
def mod_words(raw, p, c, cq, pinv, out):
    """out = raw mod p for 64-bit words (raw % p, without a 64-bit division): x = hi 2^32 + lo,
    t = hi (2^32 mod p) by Shoup (c, cq) in [0, 2p), y = t + lo < 2^34 = x mod p, then q = y / p
    in float64 (exact input, off by at most one) and one correction each way."""
    K, L, n = raw.shape
    for k in range(K):
        for l in range(L):
            pl, cl, cql, inv, s, o = np.int64(p[l]), c[l], cq[l], pinv[l], raw[k, l], out[k, l]
            for j in range(n):
                x = s[j]
                hi = x >> _S32
                t = hi * cl - ((hi * cql) >> _S32) * np.uint64(pl)
                y = np.int64(t + (x & _M32))
                r = y - np.int64(np.float64(y) * inv) * pl
                r = r + pl if r < 0 else r
                o[j] = r - pl if r >= pl else r

# -- crt.py's decode, a chunk of coefficients at a time -----------------------------------------
# The same steps on the same 8 x 32-bit limbs (two's complement mod 2^256, uint64 words) as crt.py's
# numpy passes: Garner, Horner, centre, round, the noise check, balanced digits; each step one loop
# over a chunk of coefficients (vectorised) with no array allocated per step. Residues must be
# reduced (crt.py checks; Garner's products are then Shoup's, without a division). Limb arrays are
# (8, C); masks are all-ones or zero words, so that the loops have no branches.

_NL = 8
_CH = 2048  # coefficients per chunk: its limbs (~200 KiB in all) stay in L2


@_jit
def _v_add(x, c, sel, carry, n):
    """x[:, m] += c (limbs) mod 2^256 where sel[m] is all ones (nothing where it is 0)."""
    carry[:n] = 0
    for i in range(_NL):
        xi, ci = x[i], c[i]
        for m in range(n):
            t = xi[m] + (ci & sel[m]) + carry[m]
            xi[m] = t & _M32
            carry[m] = t >> _S32


@_jit
def _v_compare(x, c, bits, gt, eq, n):
    """gt[m], eq[m] = (x[:, m] mod 2^bits > c, == c) as 1/0 words, c as limbs < 2^bits."""
    gt[:n] = 0
    eq[:n] = 1
    for i in range((bits + 31) // 32 - 1, -1, -1):
        mask = _M32 if 32 * (i + 1) <= bits else (np.uint64(1) << np.uint64(bits - 32 * i)) - np.uint64(1)
        xi, ci = x[i], c[i]
        for m in range(n):
            v = xi[m] & mask
            gt[m] |= eq[m] & np.uint64(v > ci)
            eq[m] &= np.uint64(v == ci)


@_jit
def _v_shift_right(x, s, fill, n):
    """x[:, m] >>= s (arithmetic), in place: limb i from limbs i + q and i + q + 1 (q = s // 32),
    read before they are written."""
    q, r = s // 32, np.uint64(s % 32)
    for m in range(n):
        fill[m] = _M32 * (x[_NL - 1, m] >> np.uint64(31))
    for i in range(_NL):
        for m in range(n):
            lo = x[i + q, m] if i + q < _NL else fill[m]
            hi = x[i + q + 1, m] if i + q + 1 < _NL else fill[m]
            x[i, m] = lo if r == 0 else ((lo >> r) | (hi << (np.uint64(32) - r))) & _M32


@_jit
def crt_digits(res, primes, garner, garner_q, q_half, minus_q, half, hb, noise, hi, lo, strict, delta_bits,
               value_bits, digits):
    """digits (k, M) int64: the balanced base-2^value_bits digits of V = round(x / 2^delta_bits)
    for the integers x in (-Q/2, Q/2] that the reduced residues res (L, M) stand for. False (crt's
    None) when `noise` and some x mod 2^delta_bits lies above `hi` or below `lo` (limbs: |x -
    2^delta_bits V| > bound), or `strict` and some V needs more than k digits. garner[i, j] =
    p_j^-1 mod p_i, garner_q its Shoup companions."""
    L, M = res.shape
    k = digits.shape[0]
    y, x = np.empty((L, _CH), np.uint64), np.empty((_NL, _CH), np.uint64)
    words = np.empty((5, _CH), np.uint64)
    carry, sel, gt, eq, ones = words[0], words[1], words[2], words[3], words[4]
    ones[:] = _M32 | (_M32 << _S32)
    hb_int = np.int64(hb[0] | (hb[1] << _S32))
    low = (np.uint64(1) << np.uint64(value_bits)) - np.uint64(1)
    for start in range(0, M, _CH):
        n = min(_CH, M - start)
        for i in range(L):  # Garner's mixed radix: y_i < p_i
            p, yi = primes[i], y[i]
            for m in range(n):
                yi[m] = res[i, start + m]
            for j in range(i):
                g, gq, yj = garner[i, j], garner_q[i, j], y[j]
                for m in range(n):
                    v = yj[m]
                    u = yi[m] + p - (v - p if v >= p else v)  # < 2 p_i < 2^32
                    t = u * g - ((u * gq) >> _S32) * p
                    yi[m] = t - p if t >= p else t
        x[:, :n] = 0
        x[0, :n] = y[L - 1, :n]
        for i in range(L - 2, -1, -1):  # Horner into limbs
            p = primes[i]
            carry[:n] = y[i, :n]
            for j in range(_NL):
                xj = x[j]
                for m in range(n):
                    t = xj[m] * p + carry[m]
                    xj[m] = t & _M32
                    carry[m] = t >> _S32
        _v_compare(x, q_half, 32 * _NL, gt, eq, n)
        for m in range(n):
            sel[m] = np.uint64(0) - gt[m]  # all ones where x > Q/2
        _v_add(x, minus_q, sel, carry, n)  # centre
        _v_add(x, half, ones, carry, n)  # round
        if noise:
            _v_compare(x, hi, delta_bits, gt, eq, n)
            for m in range(n):
                if gt[m]:
                    return False
            _v_compare(x, lo, delta_bits, gt, eq, n)
            for m in range(n):
                if not (gt[m] | eq[m]):
                    return False
        _v_shift_right(x, delta_bits, carry, n)
        for j in range(k):
            _v_add(x, hb, ones, carry, n)
            for m in range(n):
                digits[j, start + m] = np.int64((x[0, m] | (x[1, m] << _S32)) & low) - hb_int
            _v_shift_right(x, value_bits, carry, n)
        if strict:
            for i in range(_NL):
                for m in range(n):
                    if x[i, m] != 0:
                        return False
    return True
