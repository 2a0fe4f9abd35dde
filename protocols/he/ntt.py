"""Hazmat: the negacyclic NTT of ring.py as vectorised numpy passes (SEAL's roots and order).

Each stage is one Cooley-Tukey (forward) or Gentleman-Sande (inverse) butterfly over all L x N/2
pairs of one ring element at once, in 15 numpy passes with preallocated buffers and no
division. Values are reduced residues held as uint32 (every p < 2^31): sums of two stay below
2^32, so additions, subtractions and their reductions run on 4-byte words (about 3x faster per
word than uint64 here) as min(v, v - p) or min(v, v + p), the wrong candidate having wrapped
around mod 2^32. Only the twiddle product widens to uint64: Shoup's multiplication by w with its
precomputed companion w' = floor(w 2^32 / p), where for x < 2^32, q = floor(x w' / 2^32) and
r = x w - q p lies in [0, 2p).

Why a transposition half-way: a stage pairs coordinates `half` apart, and once `half` is small
numpy's inner loops run over a few contiguous words only (several times slower per word). With
N = B * S, the first log B stages pair coordinates in different blocks of S and run on the
natural (L, B, S) layout (inner runs >= S); the last log S stages pair coordinates inside a block
and run on the transposed (L, S, B) layout (inner runs >= B), with the twiddles regathered to it.

These passes are the reference: `NTTPlan` runs kernels.py's compiled loops over the same
layouts and twiddles (several times faster, bit-identical, tested) unless numba cannot be
imported, which one log line says, or SECUREFED_HE_KERNELS=numpy asks for the passes (a benchmark's
baseline, or a platform where numba misbehaves).
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import threading

import numpy as np

log = logging.getLogger(__name__)

_U32 = np.uint64(32)


def shoup_companion(w: np.ndarray, p: np.ndarray) -> np.ndarray:
    """floor(w * 2^32 / p) for residues w < p (broadcast against p)."""
    return (w.astype(np.uint64) << _U32) // p


def compiled_kernels():
    """kernels.py's module, or None: SECUREFED_HE_KERNELS=numpy, or numba cannot be imported."""
    return None if os.environ.get("SECUREFED_HE_KERNELS", "").lower() == "numpy" else _import_kernels()


@functools.cache
def _import_kernels():
    """kernels.py's module, or None (logged once) when numba cannot be imported."""
    try:
        return importlib.import_module(".kernels", __package__)  # beside this file, wherever it moves
    except Exception as exc:  # no numba wheel for this platform, or no writable kernel cache
        log.warning("he: compiled ring kernels unavailable (%s: %s); the NTT, products and decode run as "
                    "numpy passes, several times slower", type(exc).__name__, exc)
        return None


class NTTPlan:
    """Twiddles of every stage in the layout its stage runs on, and per-thread scratch buffers."""

    def __init__(self, primes: tuple[int, ...], n: int, zeta: np.ndarray, zeta_inv: np.ndarray,
                 n_inv: np.ndarray, compiled: bool = True) -> None:
        """zeta[l, k] = psi_l^bitrev(k), zeta_inv the same for psi^-1, n_inv (L, 1) = N^-1 mod p.
        compiled=False: always the numpy passes (the reference the kernels are tested against)."""
        L, log_n = len(primes), n.bit_length() - 1
        p = np.array(primes, dtype=np.uint64).reshape(L, 1)
        self.size, self.n, self.p = L, n, p
        self.blocks = 1 << (log_n // 2)  # B
        self.block = n // self.blocks  # S

        def pair(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            w = np.ascontiguousarray(w)
            return w, shoup_companion(w, p.reshape((L,) + (1,) * (w.ndim - 1)))

        self._natural = []  # (m, half, fwd twiddles, inv twiddles), twiddles (L, m, 1)
        for k in range(log_n // 2):
            m = 1 << k
            self._natural.append((m, n // (2 * m), pair(zeta[:, m : 2 * m, None]), pair(zeta_inv[:, m : 2 * m, None])))
        self._transposed = []  # (h, G, fwd, inv), twiddles (L, G, 1, B): block a*G + g of stage m
        for k in range(log_n // 2, log_n):
            m, h = 1 << k, n >> (k + 1)
            g = self.block // (2 * h)
            idx = (m + np.arange(self.blocks)[None, :] * g + np.arange(g)[:, None])[:, None, :]  # (G, 1, B)
            self._transposed.append((h, g, pair(zeta[:, idx]), pair(zeta_inv[:, idx])))
        # The inverse's last stage (natural[0], or transposed[0] when N = 2) also multiplies by
        # N^-1: its twiddles times N^-1, and its sums scaled by N^-1 (no separate pass at the end).
        stages = self._natural or self._transposed
        first, second, fwd, inv = stages[0]
        n_inv = n_inv.astype(np.uint64).reshape((L,) + (1,) * (inv[0].ndim - 1))
        stages[0] = (first, second, fwd, pair(inv[0] * n_inv % p.reshape(n_inv.shape)))
        self._n_inv = pair(n_inv)
        # p shaped for the stages' (L, m, half) and (L, G, h, B) views and for (L, N/2) halves
        self._p64 = {d: p.reshape((L,) + (1,) * (d - 1)) for d in (2, 3, 4)}
        self._p32 = {d: v.astype(np.uint32) for d, v in self._p64.items()}
        self._local = threading.local()
        self._kernels = compiled_kernels() if compiled else None
        if self._kernels is not None:
            self._kernel_tables(zeta, zeta_inv, p)

    def _kernel_tables(self, zeta: np.ndarray, zeta_inv: np.ndarray, p: np.ndarray) -> None:
        """The kernels' operands: the natural stages' twiddles flat (L, N) as zeta and zeta_inv are
        (the inverse's w[:, 1] times N^-1 when a natural stage runs last), the transposed stages'
        concatenated (L, N - B), companions beside each, all uint32; p and N^-1 as int64 (L,)."""
        L = self.size

        def u32(pair):
            return tuple(np.ascontiguousarray(a.reshape(L, -1), dtype=np.uint32) for a in pair)

        def flat(stages, which):
            return u32(tuple(np.concatenate([s[which][i].reshape(L, -1) for s in stages], axis=1)
                             if stages else np.zeros((L, 0), np.uint64) for i in (0, 1)))

        inv = np.array(zeta_inv, dtype=np.uint64)
        if self._natural:
            inv[:, 1] = self._natural[0][3][0][:, 0, 0]
        self._k_fwd = u32((zeta, shoup_companion(np.asarray(zeta, np.uint64), p))) + flat(self._transposed, 2)
        self._k_inv = u32((inv, shoup_companion(inv, p))) + flat(self._transposed, 3)
        self._k_p = p.reshape(L).astype(np.int64)
        self._k_n_inv = tuple(a.reshape(L).astype(np.int64) for a in self._n_inv)

    def _transpose_buffer(self) -> np.ndarray:
        """Per thread: the kernels' (S, B) uint32 scratch for one prime's row."""
        t = getattr(self._local, "tr", None)
        if t is None:
            t = self._local.tr = np.empty((self.block, self.blocks), np.uint32)
        return t

    def _scratch(self) -> tuple[np.ndarray, ...]:
        """Per thread: three uint64 and two uint32 half-element buffers, one uint32 element."""
        s = getattr(self._local, "bufs", None)
        if s is None:
            half = self.size * self.n // 2
            s = self._local.bufs = (np.empty(half, np.uint64), np.empty(half, np.uint64), np.empty(half, np.uint64),
                                    np.empty(half, np.uint32), np.empty(half, np.uint32),
                                    np.empty(2 * half, np.uint32))
        return s

    def _mul(self, x, w, out, shape, bufs) -> None:
        """out = x * w mod p (x, out uint32 < p; w a (twiddles, companions) pair)."""
        x64, q, t, s32 = (b.reshape(shape) for b in (bufs[0], bufs[1], bufs[2], bufs[4]))
        p, p32 = self._p64[len(shape)], self._p32[len(shape)]
        np.copyto(x64, x)
        np.multiply(x64, w[1], out=q)
        np.right_shift(q, _U32, out=q)
        np.multiply(q, p, out=q)
        np.multiply(x64, w[0], out=t)
        np.subtract(t, q, out=t)  # [0, 2p)
        np.copyto(out, t, casting="unsafe")  # < 2^32
        np.subtract(out, p32, out=s32)
        np.minimum(out, s32, out=out)

    def _ct(self, x0, x1, w, shape, bufs) -> None:
        """(x0, x1) -> (x0 + w x1, x0 - w x1), reduced."""
        t32, s32 = bufs[3].reshape(shape), bufs[4].reshape(shape)
        p32 = self._p32[len(shape)]
        self._mul(x1, w, t32, shape, bufs)
        np.subtract(x0, t32, out=s32)  # wraps around mod 2^32 when x0 < t
        np.add(x0, t32, out=x0)  # < 2p < 2^32
        np.add(s32, p32, out=t32)
        np.minimum(s32, t32, out=x1)  # x0 - t + p wraps back exactly when x0 - t wrapped
        np.subtract(x0, p32, out=s32)
        np.minimum(x0, s32, out=x0)

    def _gs(self, y0, y1, w, shape, bufs, scale=None) -> None:
        """(y0, y1) -> (y0 + y1, (y0 - y1) w), reduced; the sum times `scale` if given."""
        t32, s32 = bufs[3].reshape(shape), bufs[4].reshape(shape)
        p32 = self._p32[len(shape)]
        np.subtract(y0, y1, out=t32)
        np.add(t32, p32, out=s32)
        np.minimum(t32, s32, out=t32)  # y0 - y1 mod p
        np.add(y0, y1, out=y0)
        np.subtract(y0, p32, out=s32)
        np.minimum(y0, s32, out=y0)
        if scale is not None:
            self._mul(y0, scale, y0, shape, bufs)  # leaves t32 alone
        self._mul(t32, w, y1, shape, bufs)

    def forward(self, x: np.ndarray) -> None:
        """In place on one element (L, N) uint32 of reduced residues -> NTT form, reduced."""
        if self._kernels is None:
            return self._forward_numpy(x)
        self._kernels.forward(x, self._transpose_buffer(), *self._k_fwd, self._k_p)

    def inverse(self, x: np.ndarray) -> None:
        """In place on one element (L, N) uint32 in NTT form, reduced -> coefficients, reduced."""
        if self._kernels is None:
            return self._inverse_numpy(x)
        self._kernels.inverse(x, self._transpose_buffer(), *self._k_inv, self._k_p, *self._k_n_inv)

    def _forward_numpy(self, x: np.ndarray) -> None:
        L, B, S = self.size, self.blocks, self.block
        bufs = self._scratch()
        for m, half, w, _ in self._natural:
            v = x.reshape(L, m, 2, half)
            self._ct(v[:, :, 0], v[:, :, 1], w, (L, m, half), bufs)
        tr = bufs[5].reshape(L, S, B)
        np.copyto(tr, x.reshape(L, B, S).transpose(0, 2, 1))
        for h, g, w, _ in self._transposed:
            v = tr.reshape(L, g, 2, h, B)
            self._ct(v[:, :, 0], v[:, :, 1], w, (L, g, h, B), bufs)
        np.copyto(x.reshape(L, B, S), tr.transpose(0, 2, 1))

    def _inverse_numpy(self, x: np.ndarray) -> None:
        L, B, S = self.size, self.blocks, self.block
        bufs = self._scratch()
        tr = bufs[5].reshape(L, S, B)
        np.copyto(tr, x.reshape(L, B, S).transpose(0, 2, 1))
        last = None if self._natural else 0
        for i in reversed(range(len(self._transposed))):
            h, g, _, w = self._transposed[i]
            v = tr.reshape(L, g, 2, h, B)
            self._gs(v[:, :, 0], v[:, :, 1], w, (L, g, h, B), bufs, self._n_inv if i == last else None)
        np.copyto(x.reshape(L, B, S), tr.transpose(0, 2, 1))
        for i in reversed(range(len(self._natural))):
            m, half, _, w = self._natural[i]
            v = x.reshape(L, m, 2, half)
            self._gs(v[:, :, 0], v[:, :, 1], w, (L, m, half), bufs, self._n_inv if i == 0 else None)
