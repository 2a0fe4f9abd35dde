"""Randomness for the DP mechanisms.

Secure paths draw from the OS CSPRNG (`os.urandom` / `secrets`), never from Python's `random` nor a
fixed seed: a DP guarantee assumes the adversary cannot predict the noise or the sampled batch.
Reproducible paths (tests, secure_mode off) take an explicit seed.
"""

from __future__ import annotations

import os

import numpy as np


def uniforms_from_bytes(data: bytes) -> np.ndarray:
    """(len(data) // 8,) float64 in [0, 1): the top 53 bits of each little-endian 64-bit word."""
    raw = np.frombuffer(data, dtype="<u8")
    return (raw >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)


def secure_uniforms(count: int) -> np.ndarray:
    """(count,) float64 in [0, 1) with 53 random bits each, from the OS CSPRNG."""
    return uniforms_from_bytes(os.urandom(8 * count))


def secure_normal(count: int, std: float) -> np.ndarray:
    """(count,) N(0, std^2) by Box-Muller over CSPRNG uniforms.

    As Opacus's secure_mode does against floating-point attacks (Mironov-style, arXiv 2107.10138),
    the sample is the mean-preserving combination (g1+g2+g3+g4)/2 of four Gaussians of the same std,
    so the low-order bits of any single Gaussian draw are not exposed."""
    if count == 0 or std == 0:
        return np.zeros(count)
    total = np.zeros(count)
    for _ in range(4):
        u1 = 1.0 - secure_uniforms(count)  # (0, 1]: log is finite
        u2 = secure_uniforms(count)
        total += np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
    return total * (std / 2.0)


def poisson_sample(n: int, rate: float, uniforms: np.ndarray) -> np.ndarray:
    """Indices i in [0, n) with uniforms[i] < rate: each record independently with probability `rate`
    (Poisson sampling, what the subsampled-Gaussian accountants assume)."""
    if uniforms.shape != (n,):
        raise ValueError("need one uniform per record")
    return np.flatnonzero(uniforms < rate)
