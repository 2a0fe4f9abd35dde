"""Distributed DP for user-level updates: each party adds its share of Skellam noise in the integer
domain, before secure aggregation (Agarwal, Kairouz & Liu 2021, "The Skellam mechanism"; the
rotation / scaling / conditional rounding / modular clipping pipeline of Kairouz, Liu & Steinke 2021).

Party (encode), for a clipped update x (||x|| <= C, m coordinates):
  1. rotate: a randomized Hadamard transform with a public per-round seed (orthogonal, so ||x|| is
     kept; it spreads x's energy over coordinates so none stands out against the modulus);
  2. scale by 1/gamma and round each coordinate up or down at random (unbiased), repeating until the
     rounded vector's norm is <= B (conditional randomized rounding): B bounds the integer sensitivity;
  3. add Skellam(mu) = Poisson(mu) - Poisson(mu) per coordinate (integers, no floating-point attack
     surface), drawn from a CSPRNG-keyed generator; mu is sized so that n_min surviving parties
     together reach the target variance (a dropout margin);
  4. reduce mod 2^k into [-2^(k-1), 2^(k-1)) and send y * carrier_step as the protocol's float input.
Server (decode), on the protocol's sum: back to integers, reduce mod 2^k (the sum of the wrapped
shares is the wrapped sum, so this is a post-processing of (true sum + total noise)), times gamma,
un-rotate.

Composing with `secagg` without touching its codec: with weight 1, a power-of-two `clip` and
k <= precision_bits, the codec maps y * step back to exactly y (its stochastic rounding adds nothing
to an integer), and its ring is wide enough that the masked sum is the exact integer sum.

Accounting: the sum of n Skellam(mu) is Skellam(n mu), variance 2 n mu, accounted with the Skellam
RDP bound (accounting.skellam_rdp) at L2 sensitivity B and L1 sensitivity min(B^2, sqrt(dim) B) (an
integer vector's L1 norm is at most its squared L2 norm); z_eff = sqrt(2 n mu) / B is the noise
multiplier of the equal-variance Gaussian, the bound's leading term. A single party's share has
z = sqrt(2 mu) / B, below the target by sqrt(n_min); c colluding contributors can subtract their own
shares, leaving sqrt(2 (n - c) mu) / B (`collusion_noise_multiplier`).

Randomness: rounding coins and Skellam noise come from an AES-256-CTR keystream under a fresh OS key
(privacy.csprng), never from a seeded or statistical generator.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from securefed.privacy import csprng

MAX_ROUNDING_TRIES = 1000


def fwht(x: np.ndarray) -> np.ndarray:
    """Orthonormal Walsh-Hadamard transform of a power-of-two-length vector (its own inverse)."""
    n = x.size
    if n & (n - 1):
        raise ValueError("length must be a power of two")
    y = np.array(x, dtype=np.float64)
    h = 1
    while h < n:
        y = y.reshape(-1, 2, h)
        a, b = y[:, 0, :], y[:, 1, :]
        y = np.stack([a + b, a - b], axis=1)
        h *= 2
    return y.reshape(n) / math.sqrt(n)


_SIGNS = b"securefed/rotation-signs/v1\x00"


def _signs(seed: int, count: int, rule: str = "shake256") -> np.ndarray:
    """count +-1 from the bits of SHAKE-256(label, seed in decimal), first byte's high bit first.
    Public randomness every party and the server derive: a fixed function of public bytes, not a
    numpy generator, whose streams numpy does not promise across releases (a party on another numpy
    would rotate differently and the un-rotated sum would be silently wrong). rule "numpy": the
    earlier derivation, kept for runs and federations that began with it (privacy.rotation)."""
    if rule == "numpy":
        return np.where(np.random.default_rng(seed).random(count) < 0.5, -1.0, 1.0)
    if rule != "shake256":
        raise ValueError(f"unknown rotation rule {rule!r} (shake256 or numpy)")
    stream = hashlib.shake_256(_SIGNS + str(seed).encode()).digest((count + 7) // 8)
    bits = np.unpackbits(np.frombuffer(stream, np.uint8), count=count)
    return 1.0 - 2.0 * bits  # bit 0 -> +1, bit 1 -> -1


def rotate(x: np.ndarray, seed: int, rule: str = "shake256") -> np.ndarray:
    """Randomized Hadamard rotation of any length m: H D1 on the first 2^floor(log2 m) coordinates,
    then H D2 on the last 2^floor(log2 m) (overlapping) when m is not a power of two. Both steps are
    orthogonal, so the whole is, and the length stays m (the protocol's vector length)."""
    m = x.size
    d = 1 << (m.bit_length() - 1)
    s = _signs(seed, 2 * d, rule)
    y = np.array(x, dtype=np.float64)
    y[:d] = fwht(s[:d] * y[:d])
    if d != m:
        y[m - d :] = fwht(s[d:] * y[m - d :])
    return y


def unrotate(y: np.ndarray, seed: int, rule: str = "shake256") -> np.ndarray:
    m = y.size
    d = 1 << (m.bit_length() - 1)
    s = _signs(seed, 2 * d, rule)
    x = np.array(y, dtype=np.float64)
    if d != m:
        x[m - d :] = s[d:] * fwht(x[m - d :])
    x[:d] = s[:d] * fwht(x[:d])
    return x


def centered_mod(v: np.ndarray, bits: int) -> np.ndarray:
    """Integers reduced into [-2^(bits-1), 2^(bits-1))."""
    half = 1 << (bits - 1)
    return ((np.asarray(v, dtype=np.int64) + half) % (1 << bits)) - half


def rounding_bound(norm_scaled: float, dim: int, beta: float) -> float:
    """Kairouz et al.'s bound on ||round(x)|| for ||x|| <= c: c^2 + d/4 + sqrt(2 ln(1/beta)) (c + sqrt(d)/2),
    exceeded by one randomized rounding with probability <= beta."""
    c = norm_scaled
    return math.sqrt(c * c + dim / 4 + math.sqrt(2 * math.log(1 / beta)) * (c + math.sqrt(dim) / 2))


@dataclass(frozen=True)
class DistributedPlan:
    """Public parameters of one round's distributed mechanism, the same on every party and the server."""

    dim: int
    clip: float  # C: L2 bound of a party's update
    gamma: float  # one integer unit, in update units
    bits: int  # k: the sum is taken mod 2^k
    norm_bound: float  # B: L2 sensitivity in integer units after conditional rounding
    mu: float  # per-party Skellam parameter (variance 2 mu per coordinate, integer units)
    n_min: int  # survivors for which the sum still has the target noise
    carrier_step: float  # the protocol input carries y as y * carrier_step
    seed: int  # public rotation seed of the round
    beta: float
    rotation: str = "shake256"  # how the seed becomes signs (privacy.rotation)

    @classmethod
    def for_round(cls, dim: int, clip: float, noise_multiplier: float, n_selected: int, dropout_tolerance: float,
                  bits: int, tail_bound: float, beta: float, carrier_step: float, seed: int,
                  rotation: str = "shake256") -> "DistributedPlan":
        if dim < 1 or n_selected < 1 or not (clip > 0 and noise_multiplier > 0):
            raise ValueError("need dim, n_selected >= 1 and clip, noise_multiplier > 0")
        if not (2 <= bits <= 24 and 0 <= dropout_tolerance < 1 and tail_bound >= 1 and 0 < beta < 1):
            raise ValueError("bits in [2, 24], dropout_tolerance in [0, 1), tail_bound >= 1, beta in (0, 1)")
        n_min = n_selected - math.floor(dropout_tolerance * n_selected)
        half = 2 ** (bits - 1)
        # gamma: the sum's coordinates (at most n C / sqrt(dim) each after rotation, plus the noise of std
        # z * Delta) must fit tail_bound stds inside half the modulus. Delta = gamma * B depends on gamma
        # only weakly (the rounding term), so a few fixed-point iterations settle it.
        delta = clip
        for _ in range(4):
            gamma = tail_bound * math.sqrt((n_selected * clip) ** 2 / dim + (noise_multiplier * delta) ** 2) / half
            norm_bound = rounding_bound(clip / gamma, dim, beta)
            delta = gamma * norm_bound
        mu = (noise_multiplier * norm_bound) ** 2 / (2 * n_min)
        return cls(dim, clip, gamma, bits, norm_bound, mu, n_min, carrier_step, seed, beta, rotation)

    @property
    def sensitivity(self) -> float:
        """L2 sensitivity of the sum in update units (gamma * B >= C)."""
        return self.gamma * self.norm_bound

    def noise_std(self, n_contributors: int) -> float:
        """Per-coordinate std of the decoded sum's noise, in update units."""
        return self.gamma * math.sqrt(2 * self.mu * n_contributors)

    def effective_noise_multiplier(self, n_contributors: int) -> float:
        """z of the Gaussian mechanism with the same variance (the Skellam bound's leading term)."""
        return math.sqrt(2 * self.mu * n_contributors) / self.norm_bound

    def collusion_noise_multiplier(self, n_contributors: int, colluders: int) -> float:
        """z left in the sum against a server colluding with `colluders` of the contributors: they
        subtract their own shares, so only the other n - c shares' noise protects a party."""
        return self.effective_noise_multiplier(max(0, n_contributors - colluders))

    @property
    def l1_bound(self) -> float:
        """L1 sensitivity in integer units: ||r||_1 <= ||r||_2^2 for an integer vector, and <= sqrt(dim) ||r||_2."""
        return min(self.norm_bound ** 2, math.sqrt(self.dim) * self.norm_bound)

    def spend(self, n_contributors: int):
        """The accountant's record of this round's sum with n contributors (Skellam, sample rate 1)."""
        from securefed.privacy.accounting import Spend

        return Spend(self.effective_noise_multiplier(n_contributors), 1.0, 1, self.norm_bound, self.l1_bound)

    def sensitivity_inflation(self) -> float:
        """gamma * B / C: how much rounding at this modulus inflates the sensitivity the noise must cover."""
        return self.sensitivity / self.clip


def conditional_round(x: np.ndarray, bound: float, rng) -> np.ndarray:
    """Unbiased randomized rounding of x, redrawn until ||rounded|| <= bound. `rng`: anything with
    .random(count) (csprng.AesCtrUniforms on every real path)."""
    floor = np.floor(x)
    frac = x - floor
    for _ in range(MAX_ROUNDING_TRIES):
        r = floor + (rng.random(x.size) < frac)
        if float(np.dot(r, r)) <= bound * bound:
            return r.astype(np.int64)
    raise RuntimeError("conditional rounding did not meet its norm bound; is the input clipped?")


def encode(plan: DistributedPlan, update: np.ndarray, rng) -> np.ndarray:
    """A party's clipped update -> its noisy wrapped share as a float32 carrier vector.
    `rng` must be secret to the party (privacy.csprng.secure_generator: an AES-CTR keystream)."""
    if update.shape != (plan.dim,):
        raise ValueError(f"update has shape {update.shape}, plan expects ({plan.dim},)")
    if float(np.linalg.norm(update)) > plan.clip * (1 + 1e-6):
        raise ValueError("update is not clipped to the plan's L2 bound")
    scaled = rotate(update, plan.seed, plan.rotation) / plan.gamma
    rounded = conditional_round(scaled, plan.norm_bound, rng)
    noise = csprng.skellam(plan.mu, plan.dim, rng)  # Skellam(mu), exact integers
    share = centered_mod(rounded + noise, plan.bits)
    return (share * plan.carrier_step).astype(np.float32)


def decode(plan: DistributedPlan, carrier_sum: np.ndarray) -> np.ndarray:
    """The protocol's sum of carriers -> the noisy sum of updates (float64, update units)."""
    if carrier_sum.shape != (plan.dim,):
        raise ValueError(f"sum has shape {carrier_sum.shape}, plan expects ({plan.dim},)")
    ints = np.rint(np.asarray(carrier_sum, dtype=np.float64) / plan.carrier_step).astype(np.int64)
    return unrotate(centered_mod(ints, plan.bits) * plan.gamma, plan.seed, plan.rotation)
