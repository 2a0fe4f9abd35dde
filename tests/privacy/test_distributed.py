"""Distributed DP (Skellam shares in the integer domain, rotation, conditional rounding, mod 2^k):
the sum the server unmasks carries the promised noise; no single share does; it composes with secagg."""

from __future__ import annotations

import numpy as np
import pytest

from securefed.privacy import distributed as dd
from securefed.privacy.accounting import Spend, epsilon
from securefed.privacy.csprng import secure_generator
from securefed.protocols.base import PartyInput, RoundContext
from securefed.protocols.driver import run_round
from securefed.protocols.plain import Plain
from securefed.protocols.secagg import SecAgg, SecAggConfig

Z, CLIP = 1.0, 0.5


def plan(dim, n, tol=0.2, step=1.0, bits=16, seed=7):
    return dd.DistributedPlan.for_round(dim, CLIP, Z, n, tol, bits, 4.0, float(np.exp(-0.5)), step, seed)


def unit_update(dim, rng):
    v = rng.normal(size=dim)
    return v * (CLIP / np.linalg.norm(v)) * 0.99


def test_rotation_is_orthogonal_for_any_length():
    rng = np.random.default_rng(0)
    for m in (1, 8, 13, 1000):
        x = rng.normal(size=m)
        y = dd.rotate(x, 5)
        assert np.linalg.norm(y) == pytest.approx(np.linalg.norm(x))
        np.testing.assert_allclose(dd.unrotate(y, 5), x, atol=1e-12)
    spike = np.zeros(1000)
    spike[3] = 1.0
    assert np.abs(dd.rotate(spike, 5)).max() < 0.1  # energy spread over coordinates


def test_rotation_signs_are_a_fixed_function_of_public_bytes():
    """Every party and the server derive the signs; they must agree on any machine. The spec,
    restated with hashlib alone: bits of SHAKE-256(label, decimal seed), high bit first, 1 -> -1."""
    import hashlib

    stream = hashlib.shake_256(b"securefed/rotation-signs/v1\x00" + b"5").digest(2)
    want = [-1.0 if (stream[i // 8] >> (7 - i % 8)) & 1 else 1.0 for i in range(13)]
    assert dd._signs(5, 13).tolist() == want
    assert dd._signs(5, 13).tolist() == dd._signs(5, 4096)[:13].tolist()  # a prefix of one stream
    assert dd._signs(5, 4096).tolist() != dd._signs(6, 4096).tolist()
    assert abs(dd._signs(7, 1 << 16).mean()) < 0.02  # balanced (sd of the mean 0.004)
    # the earlier rule, which runs and federations from before privacy.rotation keep
    old = np.where(np.random.default_rng(5).random(4096) < 0.5, -1.0, 1.0)
    assert dd._signs(5, 4096, "numpy").tolist() == old.tolist()
    x = np.random.default_rng(0).normal(size=100)
    np.testing.assert_allclose(dd.unrotate(dd.rotate(x, 5, "numpy"), 5, "numpy"), x, atol=1e-12)
    assert not np.allclose(dd.unrotate(dd.rotate(x, 5, "numpy"), 5), x)  # two rules do not mix


def test_conditional_rounding_is_unbiased_and_bounded():
    rng = np.random.default_rng(1)
    x = rng.normal(size=64) * 3
    bound = dd.rounding_bound(float(np.linalg.norm(x)), 64, np.exp(-0.5))
    rounds = np.stack([dd.conditional_round(x, bound, rng) for _ in range(2000)])
    assert (np.linalg.norm(rounds, axis=1) <= bound).all()
    np.testing.assert_allclose(rounds.mean(axis=0), x, atol=0.06)


def test_sum_noise_has_promised_variance_and_shares_do_not():
    dim, n = 4096, 5
    p = plan(dim, n)
    assert p.n_min == 4 and p.sensitivity >= CLIP
    rng = np.random.default_rng(2)
    updates = [unit_update(dim, rng) for _ in range(p.n_min)]
    shares = [dd.encode(p, u, secure_generator()) for u in updates]
    noisy = dd.decode(p, np.sum(np.stack(shares).astype(np.float64), axis=0))
    noise = noisy - np.sum(updates, axis=0)
    # promised: std z * Delta per coordinate when n_min parties survive (rounding adds a little more
    # variance, at most gamma^2/4 per party: negligible here). Sample std of 4096 draws: +-1.1% sd.
    target = Z * p.sensitivity
    assert p.noise_std(p.n_min) == pytest.approx(target)
    assert abs(noise.std() / target - 1) < 0.05
    assert abs(noise.mean()) < 4 * target / np.sqrt(dim)
    # one party's share alone: its noise is sqrt(n_min) too small, and so is its privacy
    alone = dd.decode(p, shares[0].astype(np.float64)) - updates[0]
    assert alone.std() == pytest.approx(target / np.sqrt(p.n_min), rel=0.05)
    eps_sum = epsilon([Spend(p.effective_noise_multiplier(p.n_min), 1.0, 1)], 1e-5)
    eps_one = epsilon([Spend(p.effective_noise_multiplier(1), 1.0, 1)], 1e-5)
    assert p.effective_noise_multiplier(p.n_min) == pytest.approx(Z)
    assert eps_one > 2 * eps_sum


def test_dropouts_below_margin_are_under_noised_and_reported():
    p = plan(256, 10, tol=0.2)
    assert p.n_min == 8
    assert p.effective_noise_multiplier(8) == pytest.approx(Z)
    assert p.effective_noise_multiplier(7) < Z  # accounted honestly with the smaller z


def test_encode_rejects_unclipped_updates():
    p = plan(16, 3)
    with pytest.raises(ValueError, match="clipped"):
        dd.encode(p, np.ones(16), secure_generator())


def test_composes_with_secagg_exactly():
    """secagg's codec maps each share back to the same integers: the unmasked sum equals plain's."""
    cfg = SecAggConfig(clip=1.0, precision_bits=16)
    n, dim = 4, 300
    p = plan(dim, n, step=cfg.clip / 2**cfg.precision_bits)
    rng = np.random.default_rng(3)
    ids = tuple(f"p{i}" for i in range(n))
    inputs = {pid: PartyInput(dd.encode(p, unit_update(dim, rng), secure_generator()), None, 1.0) for pid in ids}
    ctx = RoundContext("dp-test", 0, ids, dim, False, 8)
    secagg = SecAgg(cfg)
    got, _ = run_round(secagg, ctx, inputs, *secagg.provision(ids))
    plain = Plain()
    ref, _ = run_round(plain, ctx, inputs, *plain.provision(ids))
    np.testing.assert_array_equal(got.delta_sum, ref.delta_sum)
    assert got.stats["clipped_fraction"] == 0.0
    np.testing.assert_allclose(dd.decode(p, got.delta_sum), dd.decode(p, ref.delta_sum))
