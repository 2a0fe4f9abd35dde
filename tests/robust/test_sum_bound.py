"""A decoded sum clipped parties cannot produce is rejected under every protocol (plain, secagg, he,
each from the registry with its own config section); an honest round at the edge passes.

The attacks are a malicious party's: it skips the party-side L2 clip (aggregation.bound.norm), which
no protocol can see, or it encodes its update without the per-coordinate clip (plain has none; under
secagg and he the codec's clip is bypassed, as a modified client would). Without the bound
(the weakened variant: the check before this issue) the same sums are accepted and applied."""

from __future__ import annotations

import math

import numpy as np
import pytest

from securefed.config import load_config
from securefed.protocols import encoding, registry
from securefed.protocols.base import PartyInput, RoundContext, SumOutOfRange, check_sum
from securefed.protocols.driver import run_round
from securefed.robust.bounds import INF, input_bound, party_clip

IDS = ("p0", "p1", "p2", "p3")
M, K, CLIP, MAX_W = 64, 16, 0.5, 8
NORM = CLIP * math.sqrt(K)  # a vector at +-CLIP on K coordinates has exactly this norm
WEIGHTS = (8.0, 3.0, 1.0, 5.0)


def _cfg(protocol: str):
    sets = [f'aggregation.protocol="{protocol}"', f"aggregation.bound.norm={NORM}",
            f"aggregation.bound.control_norm={NORM}", f"parties={len(IDS)}"]
    sets.append(f"aggregation.bound.coord={CLIP}" if protocol == "plain" else f"aggregation.{protocol}.clip={CLIP}")
    if protocol == "secagg":
        sets.append(f"aggregation.secagg.control_clip={CLIP}")
    return load_config(None, sets)


def _edge() -> np.ndarray:
    v = np.zeros(M, np.float32)
    v[:K] = CLIP  # every party at the edge of both clips, all pointing the same way
    return v


def _round(protocol: str, inputs: dict[str, PartyInput], control: bool):
    cfg = _cfg(protocol)
    proto = registry.create(protocol, cfg.aggregation.section())
    ctx = RoundContext("bound", 0, IDS, M, control, MAX_W)
    vsum, _ = run_round(proto, ctx, inputs, *proto.provision(IDS))
    return vsum, ctx, input_bound(cfg), party_clip(cfg)


def _honest(control: bool) -> dict[str, PartyInput]:
    return {p: PartyInput(_edge(), _edge() if control else None, w) for p, w in zip(IDS, WEIGHTS)}


@pytest.mark.parametrize("protocol", ["plain", "secagg", "he"])
@pytest.mark.parametrize("control", [False, True])
def test_honest_round_at_the_edge_is_accepted(protocol, control):
    inputs = _honest(control)
    vsum, ctx, bound, clip = _round(protocol, {p: party_clip(_cfg(protocol)).apply(d) for p, d in inputs.items()},
                                    control)
    assert check_sum(vsum, ctx, bound) is vsum
    w = sum(WEIGHTS)
    assert np.max(np.abs(vsum.delta_sum)) == pytest.approx(CLIP * w, rel=1e-3)  # at the edge, not under it
    assert np.linalg.norm(vsum.delta_sum) == pytest.approx(NORM * w, rel=1e-3)
    if control:
        assert np.linalg.norm(vsum.control_sum) == pytest.approx(NORM * len(IDS), rel=1e-3)


@pytest.mark.parametrize("protocol", ["plain", "secagg", "he"])
@pytest.mark.parametrize("target", ["delta", "control"])
def test_a_party_that_skips_the_norm_clip_is_rejected(protocol, target):
    cfg = _cfg(protocol)
    inputs = {p: party_clip(cfg).apply(d) for p, d in _honest(True).items()}
    evil = np.full(M, CLIP, np.float32)  # inside every per-coordinate clip, norm 2x the L2 clip
    inputs["p2"] = PartyInput(evil if target == "delta" else _edge(), evil if target == "control" else _edge(),
                              1.0)
    vsum, ctx, bound, _ = _round(protocol, inputs, True)
    assert check_sum(vsum, ctx) is vsum  # weakened variant (no bound): the sum would be applied
    with pytest.raises(SumOutOfRange, match=rf"\|\|{target}\|\|_2 .* exceeds"):
        check_sum(vsum, ctx, bound)


@pytest.mark.parametrize("protocol", ["plain", "secagg", "he"])
def test_a_party_that_skips_the_coordinate_clip_is_rejected(protocol, monkeypatch):
    cfg = _cfg(protocol)
    inputs = {p: party_clip(cfg).apply(d) for p, d in _honest(False).items()}
    evil = np.zeros(M, np.float32)
    evil[0] = 6 * CLIP  # weight 1: an honest party adds at most CLIP here; norm stays inside the L2 clip
    inputs["p2"] = PartyInput(evil, None, 1.0)
    real = encoding.quantize_into

    def unclipped(out, x, bound, *args):  # a modified client: its codec skips the clip
        return real(out, x, INF if x is evil else bound, *args)

    monkeypatch.setattr(encoding, "quantize_into", unclipped)
    vsum, ctx, bound, _ = _round(protocol, inputs, False)
    assert vsum.delta_sum[0] == pytest.approx(CLIP * (sum(WEIGHTS) - 1) + 6 * CLIP, rel=1e-3)  # attack landed
    assert check_sum(vsum, ctx) is vsum
    with pytest.raises(SumOutOfRange, match=r"max \|delta\| .* exceeds"):
        check_sum(vsum, ctx, bound)


def test_bound_from_config_takes_the_smaller_clip_and_user_central_norm():
    cfg = load_config(None, ['aggregation.protocol="secagg"', "aggregation.secagg.clip=0.5",
                             "aggregation.bound.coord=0.2", "aggregation.secagg.control_clip=2.0",
                             'privacy.mechanism="user-central"', "privacy.noise_multiplier=1.0",
                             "privacy.update_clip_norm=0.3", "aggregation.bound.norm=0.7"])
    b = input_bound(cfg)
    assert (b.coord, b.norm, b.control_coord, b.control_norm) == (0.2, 0.3, 2.0, INF)
    assert not input_bound(load_config(None, [])).active  # plain with no clip configured: nothing to check
