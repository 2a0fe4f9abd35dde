"""Cryptographic randomness for the distributed mechanism: an AES-256-CTR keystream (pyca/cryptography)
turned into uniforms (distributed.conditional_round draws its rounding coins from them), and the
integer samplers (Poisson, Skellam) on top.

Why not numpy's PCG64DXSM with a secret seed: PCG is a statistical generator; its output reveals its
state, so anyone who sees enough of a party's noise (e.g. colluding parties subtracting their own
shares and probing the remainder) could in principle predict the rest. A block cipher in counter
mode under a 256-bit key from the OS is a PRF: its keystream is indistinguishable from random
without the key. Nothing here is a cipher of our own: AES-CTR is `cryptography`'s; this module only
maps its bytes to numbers.

Poisson(lam) is sampled from those uniforms by inversion (lam < 10) or Hörmann's PTRS transformed
rejection (lam >= 10; W. Hörmann, "The transformed rejection method for generating Poisson random
variables", 1993), which is exact: every accepted draw has exactly the Poisson law.
"""

from __future__ import annotations

import math
import os

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from scipy.special import gammaln

from securefed.privacy.rng import uniforms_from_bytes


class AesCtrUniforms:
    """A stream of uniforms in [0, 1) (53 random bits each) from AES-256-CTR under a fresh OS key.

    The key never leaves the object. `key` may be given only for reproducible tests."""

    def __init__(self, key: bytes | None = None) -> None:
        key = os.urandom(32) if key is None else key
        if len(key) != 32:
            raise ValueError("AES-256 needs a 32-byte key")
        self._enc = Cipher(algorithms.AES(key), modes.CTR(b"\x00" * 16)).encryptor()

    def bytes(self, n: int) -> bytes:
        return self._enc.update(b"\x00" * n)

    def random(self, count: int) -> np.ndarray:
        """(count,) float64 uniforms in [0, 1)."""
        return uniforms_from_bytes(self.bytes(8 * count))


def _poisson_small(lam: float, count: int, source: AesCtrUniforms) -> np.ndarray:
    # Inversion by products of uniforms: k = #{uniform factors before the product drops below e^-lam}.
    limit = math.exp(-lam)
    out = np.zeros(count, dtype=np.int64)
    prod = source.random(count)
    live = np.flatnonzero(prod > limit)
    while live.size:
        out[live] += 1
        prod[live] *= source.random(live.size)
        live = live[prod[live] > limit]
    return out


def _poisson_ptrs(lam: float, count: int, source: AesCtrUniforms) -> np.ndarray:
    slam, loglam = math.sqrt(lam), math.log(lam)
    b = 0.931 + 2.53 * slam
    a = -0.059 + 0.02483 * b
    inv_alpha = 1.1239 + 1.1328 / (b - 3.4)
    vr = 0.9277 - 3.6224 / (b - 2)
    out = np.empty(count, dtype=np.int64)
    todo = np.arange(count)
    while todo.size:
        u = source.random(todo.size) - 0.5
        v = source.random(todo.size)
        us = 0.5 - np.abs(u)
        k = np.floor((2 * a / np.maximum(us, 1e-300) + b) * u + lam + 0.43)
        quick = (us >= 0.07) & (v <= vr)
        valid = (k >= 0) & ~((us < 0.013) & (v > us))
        with np.errstate(divide="ignore", invalid="ignore"):
            lhs = np.log(v) + math.log(inv_alpha) - np.log(a / (us * us) + b)
            rhs = -lam + k * loglam - gammaln(k + 1)
        accept = quick | (valid & (lhs <= rhs))
        out[todo[accept]] = k[accept].astype(np.int64)
        todo = todo[~accept]
    return out


def poisson(lam: float, count: int, source: AesCtrUniforms) -> np.ndarray:
    """(count,) exact Poisson(lam) draws from the keystream."""
    if not (lam >= 0 and math.isfinite(lam)):
        raise ValueError(f"lam must be finite and >= 0, got {lam}")
    if lam == 0 or count == 0:
        return np.zeros(count, dtype=np.int64)
    return _poisson_small(lam, count, source) if lam < 10 else _poisson_ptrs(lam, count, source)


def skellam(mu: float, count: int, source: AesCtrUniforms) -> np.ndarray:
    """(count,) symmetric Skellam(mu): Poisson(mu) - Poisson(mu), variance 2 mu, exact integers."""
    return poisson(mu, count, source) - poisson(mu, count, source)


def secure_generator():
    """The distributed mechanism's secret randomness: an AES-256-CTR keystream under a fresh OS key
    (AesCtrUniforms; its Poisson/Skellam/rounding samplers draw from it). The key never leaves the
    party."""
    return AesCtrUniforms()
