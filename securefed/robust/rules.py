"""Byzantine-robust aggregation rules: pure functions over the stacked updates of one round.

Each takes X (n, m) float64, one party's update a row, and returns one (m,) estimate of the honest
mean update (plus, for Multi-Krum, the rows it kept). They need individual updates, so they only run
under the plain protocol (securefed.robust.stacked); secagg and he show the server sums only.

- median:        coordinate-wise median (Yin et al. 2018); unweighted, so a party claiming a large
                 sample count gains nothing.
- trimmed_mean:  per coordinate, drop the k = floor(beta n) smallest and largest values and average
                 the rest (Yin et al. 2018); unweighted.
- multi_krum:    score each row by the sum of squared distances to its n - f - 2 nearest others, keep
                 the m_k best-scored rows and average them, weighted (Blanchard et al. 2017).
- norm_bound:    clip each row to L2 norm M, weighted mean, optional N(0, sigma^2) noise per coordinate
                 (Sun et al. 2019, "Can You Really Backdoor Federated Learning?").
"""

from __future__ import annotations

import math

import numpy as np


def _rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"expected stacked updates of shape (n, m) with n >= 1, got {x.shape}")
    return x


def median(x: np.ndarray) -> np.ndarray:
    return np.median(_rows(x), axis=0)


def trimmed_mean(x: np.ndarray, beta: float) -> np.ndarray:
    """Mean of each coordinate after cutting floor(beta n) values at each end."""
    x = _rows(x)
    n = x.shape[0]
    if not 0 <= beta < 0.5:
        raise ValueError(f"trim fraction must be in [0, 0.5), got {beta}")
    k = int(math.floor(beta * n))
    return np.sort(x, axis=0)[k : n - k].mean(axis=0)


def krum_scores(x: np.ndarray, f: int) -> np.ndarray:
    """(n,) Krum score of each row: the sum of its squared distances to its n - f - 2 nearest rows."""
    x = _rows(x)
    n = x.shape[0]
    if n - f - 2 < 1:
        raise ValueError(f"Krum needs n > f + 2 updates ({n} with f = {f})")
    sq = np.sum(x * x, axis=1)
    d = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (x @ x.T), 0.0)  # (n, n) squared distances
    np.fill_diagonal(d, np.inf)
    return np.sort(d, axis=1)[:, : n - f - 2].sum(axis=1)


def multi_krum(x: np.ndarray, weights: np.ndarray, f: int, select: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(weighted mean of the `select` best-scored rows, their indices sorted); select defaults to n - f
    (select = 1 is Krum)."""
    x = _rows(x)
    n = x.shape[0]
    k = n - f if select is None else select
    if not 1 <= k <= n:
        raise ValueError(f"Multi-Krum cannot select {k} of {n} updates")
    keep = np.sort(np.argsort(krum_scores(x, f), kind="stable")[:k])
    w = np.asarray(weights, dtype=np.float64)[keep]
    return (w[:, None] * x[keep]).sum(axis=0) / w.sum(), keep


def norm_bound(x: np.ndarray, weights: np.ndarray, bound: float, noise: np.ndarray | None = None) -> np.ndarray:
    """Weighted mean of the rows clipped to L2 norm `bound`, plus `noise` (m,) if given (drawn by the
    caller: N(0, sigma^2) per coordinate in Sun et al.)."""
    x = _rows(x)
    if not bound > 0:
        raise ValueError(f"norm bound must be > 0, got {bound}")
    norms = np.linalg.norm(x, axis=1)
    scale = np.minimum(1.0, bound / np.maximum(norms, np.finfo(np.float64).tiny))
    w = np.asarray(weights, dtype=np.float64)
    out = (w[:, None] * (x * scale[:, None])).sum(axis=0) / w.sum()
    return out if noise is None else out + noise
