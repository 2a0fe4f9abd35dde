"""Hazmat: the negacyclic NTT of ring.py as vectorised numpy passes (SEAL's roots and order).

Each stage is one Cooley-Tukey (forward) or Gentleman-Sande (inverse) butterfly over all L x N/2
pairs of one ring element at once, in 11 numpy passes with preallocated buffers and no division:

- Shoup's multiplication by a twiddle w with its precomputed companion w' = floor(w 2^32 / p):
  for x < 2^32, q = floor(x w' / 2^32) and r = x w - q p lies in [0, 2p) (every p < 2^31);
- lazy reduction: values stay in [0, 2p) between stages (one conditional subtraction of 2p per
  output instead of a full reduction, as min(v, v - 2p) or min(v, v + 2p) on uint64, where the
  wrong candidate has wrapped around), and are reduced to [0, p) once at the end.

Why a transposition half-way: a stage pairs coordinates `half` apart, and once `half` is small
numpy's inner loops run over a few contiguous words only (several times slower per word). With
N = B * S, the first log B stages pair coordinates in different blocks of S and run on the
natural (L, B, S) layout (inner runs >= S); the last log S stages pair coordinates inside a block
and run on the transposed (L, S, B) layout (inner runs >= B), with the twiddles regathered to it.
"""

from __future__ import annotations

import threading

import numpy as np

_U32 = np.uint64(32)


def shoup_companion(w: np.ndarray, p: np.ndarray) -> np.ndarray:
    """floor(w * 2^32 / p) for residues w < p (broadcast against p)."""
    return (w.astype(np.uint64) << _U32) // p


class NTTPlan:
    """Twiddles of every stage in the layout its stage runs on, and per-thread scratch buffers."""

    def __init__(self, primes: tuple[int, ...], n: int, zeta: np.ndarray, zeta_inv: np.ndarray,
                 n_inv: np.ndarray) -> None:
        """zeta[l, k] = psi_l^bitrev(k), zeta_inv the same for psi^-1, n_inv (L, 1) = N^-1 mod p."""
        L, log_n = len(primes), n.bit_length() - 1
        p = np.array(primes, dtype=np.uint64).reshape(L, 1)
        self.size, self.n, self.p = L, n, p
        self.blocks = 1 << (log_n // 2)  # B
        self.block = n // self.blocks  # S
        self._p3, self._p4 = p.reshape(L, 1, 1), p.reshape(L, 1, 1, 1)
        self._p3x2, self._p4x2 = 2 * self._p3, 2 * self._p4

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
        self._n_inv = (n_inv.astype(np.uint64), shoup_companion(n_inv, p))
        self._local = threading.local()

    def _scratch(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s = getattr(self._local, "bufs", None)
        if s is None:
            half = self.size * self.n // 2
            s = self._local.bufs = (np.empty(half, np.uint64), np.empty(half, np.uint64),
                                    np.empty(2 * half, np.uint64))
        return s

    @staticmethod
    def _ct(x0, x1, w, p, p2, q, t) -> None:
        """(x0, x1) -> (x0 + w x1, x0 - w x1), inputs and outputs in [0, 2p)."""
        np.multiply(x1, w[1], out=q)
        np.right_shift(q, _U32, out=q)
        np.multiply(q, p, out=q)
        np.multiply(x1, w[0], out=t)
        np.subtract(t, q, out=t)  # t = w x1 mod p, in [0, 2p)
        np.subtract(x0, t, out=q)  # x0 - t in (-2p, 2p), mod 2^64
        np.add(x0, t, out=x0)  # [0, 4p)
        np.add(q, p2, out=t)
        np.minimum(q, t, out=x1)  # x0 - t + 2p wraps back into [0, 2p) exactly when x0 - t wrapped
        np.subtract(x0, p2, out=t)
        np.minimum(x0, t, out=x0)  # x0 - 2p wraps around when x0 < 2p

    @staticmethod
    def _gs(y0, y1, w, p, p2, q, t) -> None:
        """(y0, y1) -> (y0 + y1, (y0 - y1) w), inputs and outputs in [0, 2p)."""
        np.subtract(y0, y1, out=q)  # (-2p, 2p), mod 2^64
        np.add(q, p2, out=t)
        np.minimum(q, t, out=q)  # [0, 2p): Shoup's input bound
        np.add(y0, y1, out=y0)
        np.subtract(y0, p2, out=t)
        np.minimum(y0, t, out=y0)
        np.multiply(q, w[1], out=t)
        np.right_shift(t, _U32, out=t)
        np.multiply(t, p, out=t)
        np.multiply(q, w[0], out=y1)
        np.subtract(y1, t, out=y1)

    def _reduce(self, x: np.ndarray, tmp: np.ndarray) -> None:
        np.subtract(x, self.p, out=tmp)
        np.minimum(x, tmp, out=x)

    def forward(self, x: np.ndarray) -> None:
        """In place on one element (L, N), residues < 2p -> NTT form, reduced."""
        L, B, S = self.size, self.blocks, self.block
        qb, tb, big = self._scratch()
        for m, half, w, _ in self._natural:
            v = x.reshape(L, m, 2, half)
            shape = (L, m, half)
            self._ct(v[:, :, 0], v[:, :, 1], w, self._p3, self._p3x2, qb.reshape(shape), tb.reshape(shape))
        tr = big.reshape(L, S, B)
        np.copyto(tr, x.reshape(L, B, S).transpose(0, 2, 1))
        for h, g, w, _ in self._transposed:
            v = tr.reshape(L, g, 2, h, B)
            shape = (L, g, h, B)
            self._ct(v[:, :, 0], v[:, :, 1], w, self._p4, self._p4x2, qb.reshape(shape), tb.reshape(shape))
        np.copyto(x.reshape(L, B, S), tr.transpose(0, 2, 1))
        self._reduce(x, big.reshape(L, -1))

    def inverse(self, x: np.ndarray) -> None:
        """In place on one element (L, N) in NTT form, residues < 2p -> coefficients, reduced."""
        L, B, S = self.size, self.blocks, self.block
        qb, tb, big = self._scratch()
        tr = big.reshape(L, S, B)
        np.copyto(tr, x.reshape(L, B, S).transpose(0, 2, 1))
        for h, g, _, w in reversed(self._transposed):
            v = tr.reshape(L, g, 2, h, B)
            shape = (L, g, h, B)
            self._gs(v[:, :, 0], v[:, :, 1], w, self._p4, self._p4x2, qb.reshape(shape), tb.reshape(shape))
        np.copyto(x.reshape(L, B, S), tr.transpose(0, 2, 1))
        for m, half, _, w in reversed(self._natural):
            v = x.reshape(L, m, 2, half)
            shape = (L, m, half)
            self._gs(v[:, :, 0], v[:, :, 1], w, self._p3, self._p3x2, qb.reshape(shape), tb.reshape(shape))
        q = big.reshape(L, -1)
        np.multiply(x, self._n_inv[1], out=q)  # times N^-1, Shoup's way
        np.right_shift(q, _U32, out=q)
        np.multiply(q, self.p, out=q)
        np.multiply(x, self._n_inv[0], out=x)
        np.subtract(x, q, out=x)
        self._reduce(x, q)
