"""`he` protocol: configuration, provisioning checks, and rounds through `run_round` against plain."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from securefed.protocols import registry
from securefed.protocols.base import Message, PartyInput, ProtocolAbort, ProtocolError, RoundContext
from securefed.protocols.driver import run_round
from securefed.protocols.he import HE, HEConfig
from securefed.protocols.he.single_key import kits
from securefed.protocols.he.single_key.context import noise_bound
from securefed.protocols.he.single_key.packing import Layout, Quantizer, dequantize, unpack

PIDS = ("a", "b", "c", "d")
M = 3000


@pytest.fixture
def he() -> HE:  # per test: each party's round ledger lives in the protocol object
    return registry.create("he", HEConfig(mode="single_key", preset="n4096"))


@pytest.fixture(scope="module")
def kit():
    return HE(HEConfig(mode="single_key", preset="n4096")).provision(PIDS)


def make_inputs(ctx: RoundContext, seed: int = 0, scale: float = 0.05) -> dict[str, PartyInput]:
    rng = np.random.default_rng(seed)
    out = {}
    for pid in ctx.party_ids:
        delta = (rng.standard_normal(ctx.vector_len) * scale).astype(np.float32)
        control = (rng.standard_normal(ctx.vector_len) * scale).astype(np.float32) if ctx.has_control else None
        out[pid] = PartyInput(delta, control, float(rng.uniform(1, ctx.max_weight)))
    return out


def plain_round(ctx, inputs, drop_at=None):
    plain = registry.create("plain")
    drop = {p: "plain/input" for p in (drop_at or {})}
    return run_round(plain, ctx, inputs, None, {p: None for p in ctx.party_ids}, drop_at=drop)[0]


def assert_matches_plain(result, reference) -> None:
    """he equals plain within the per-coordinate bound the round reports (quantization only: the
    CKKS error, measured and bounded below half a quantum, is removed by rounding)."""
    bounds = result.stats["error_bound"]
    assert result.contributors == reference.contributors
    assert np.max(np.abs(result.delta_sum - reference.delta_sum)) <= bounds["delta_sum"] * (1 + 1e-9)
    assert abs(result.total_weight - reference.total_weight) <= bounds["total_weight"] + 1e-9
    if reference.control_sum is None:
        assert result.control_sum is None
    else:
        assert np.max(np.abs(result.control_sum - reference.control_sum)) <= bounds["control_sum"] * (1 + 1e-9)
    assert result.stats["ckks_measured_error_quanta"] < 0.5
    assert result.stats["ckks_error_bound_quanta"] < 0.5


# -- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"coeff_mod_bit_sizes": (60, 40), "poly_modulus_degree": 8192, "scale_bits": 16}, "coeff_mod_bit_sizes"),
        ({"poly_modulus_degree": 1000, "coeff_mod_bit_sizes": (60,), "scale_bits": 16}, "poly_modulus_degree"),
        ({"preset": "n8192", "scale_bits": 20}, "preset"),
        ({"poly_modulus_degree": 8192}, "poly_modulus_degree"),
        ({"max_decrypt_error": 0.5}, "max_decrypt_error"),
        ({"value_bits": 1}, "value_bits"),
        ({"clip": float("nan")}, "clip"),
        ({"decryptor": "server"}, "decryptor"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_config_rejects_with_field_name(kwargs, field):
    with pytest.raises(ValidationError, match=field):
        HEConfig(**kwargs)


def test_factory_accepts_none_and_dict():
    assert registry.create("he").config == HEConfig()
    assert registry.create("he", {"preset": "n4096"}).config.param_set().poly_modulus_degree == 4096


def test_provision_refuses_scale_too_small_for_bound():
    cfg = HEConfig(mode="single_key", poly_modulus_degree=8192, coeff_mod_bit_sizes=(60,), scale_bits=8)
    assert noise_bound(cfg.param_set(), 4) > cfg.max_decrypt_error
    with pytest.raises(ValueError, match="scale_bits=8.*max_decrypt_error"):
        HE(cfg).provision(PIDS)


def test_provision_refuses_values_that_do_not_fit_a_slot():
    cfg = HEConfig(mode="single_key", poly_modulus_degree=8192, coeff_mod_bit_sizes=(40,), scale_bits=16, value_bits=24)
    with pytest.raises(ValueError, match="value_bits=24"):
        HE(cfg).provision(PIDS)


def test_provision_refuses_fewer_parties_than_min_contributors():
    with pytest.raises(ValueError, match="min_contributors"):
        HE(HEConfig(mode="single_key", preset="n4096", min_contributors=3)).provision(("a", "b"))


# -- packing -----------------------------------------------------------------------------------


def test_packing_roundtrip_is_exact_for_sums(kit):
    public, _ = kit
    ctx = RoundContext("f", 0, PIDS, 20000, True, 50)
    layout = Layout.for_round(ctx, HEConfig(mode="single_key", preset="n4096"), public)
    assert layout.k >= 2  # several values per real slot
    inputs = make_inputs(ctx, seed=3)
    quants = [Quantizer(layout, inputs[p]) for p in PIDS]
    packed = np.concatenate([sum(q.slot_values(i) for q in quants) for i in range(layout.n_ct)])
    values = unpack(layout, packed.astype(np.int64), len(PIDS))
    expect = sum(q.values(0, layout.n_values) for q in quants)
    np.testing.assert_array_equal(values, expect)
    _, _, weight, clipped = dequantize(layout, values)
    assert clipped == 0
    assert abs(weight - sum(i.weight for i in inputs.values())) < 1e-6


def test_clipping_is_counted(he, kit):
    ctx = RoundContext("f", 1, PIDS, M, False, 10)
    inputs = make_inputs(ctx, scale=1.0)  # about a third of |N(0,1)| exceeds clip=1.0
    result, _ = run_round(he, ctx, inputs, *kit)
    frac = np.mean([np.mean(np.abs(i.delta) > 1.0) for i in inputs.values()])
    assert result.stats["clipped_fraction"] == pytest.approx(frac)


# -- rounds against plain ----------------------------------------------------------------------


@pytest.mark.parametrize("has_control", [False, True])
def test_matches_plain(he, kit, has_control):
    ctx = RoundContext("f", 7, PIDS, M, has_control, 100)
    inputs = make_inputs(ctx, seed=1)
    result, traffic = run_round(he, ctx, inputs, *kit)
    assert_matches_plain(result, plain_round(ctx, inputs))
    assert traffic.stages == ["he/input", "he/decrypt"]
    assert len(result.stats["decryptors"]) == 1


@pytest.mark.parametrize("has_control", [False, True])
def test_matches_plain_with_dropouts(he, kit, has_control):
    ctx = RoundContext("f", 2, PIDS, M, has_control, 100)
    inputs = make_inputs(ctx, seed=2)
    drop = {"b": "he/input"}
    result, _ = run_round(he, ctx, inputs, *kit, drop_at=drop)
    assert result.contributors == ("a", "c", "d")
    assert_matches_plain(result, plain_round(ctx, inputs, drop))


def test_one_decryptor_per_round_for_the_whole_federation(he, kit):
    """Round r's decryptor is roster[r % n]; if it drops, nobody else decrypts (a fallback would let
    a server decrypt two different sums of one round and subtract them)."""
    public, _ = kit
    ctx = RoundContext("f", 4, PIDS, M, True, 100)
    assert public.decryptor(4) == PIDS[4 % len(PIDS)] == "a"
    inputs = make_inputs(ctx, seed=4)
    result, traffic = run_round(he, ctx, inputs, *kit, drop_at={"b": "he/input"})
    assert result.stats["decryptors"] == ("a",)
    with pytest.raises(ProtocolAbort, match="decryptor"):
        run_round(HE(he.config), ctx, inputs, *kit, drop_at={"a": "he/decrypt"})
    with pytest.raises(ProtocolAbort, match="decryptor"):
        run_round(HE(he.config), ctx, inputs, *kit, drop_at={"a": "he/input"})


def test_only_rotate_decryptor_policy():
    with pytest.raises(ValidationError, match="decryptor"):
        HEConfig(mode="single_key", decryptor="all")


def test_too_few_contributors_aborts(he, kit):
    ctx = RoundContext("f", 6, PIDS, M, False, 100)
    with pytest.raises(ProtocolAbort):
        run_round(he, ctx, make_inputs(ctx), *kit, drop_at={p: "he/input" for p in PIDS[1:]})


def test_all_decryptors_gone_aborts(he, kit):
    ctx = RoundContext("f", 6, PIDS, M, False, 100)
    with pytest.raises(ProtocolAbort):
        run_round(he, ctx, make_inputs(ctx), *kit, drop_at={p: "he/decrypt" for p in PIDS})


def test_kits_roundtrip_through_files(tmp_path):
    he = HE(HEConfig(mode="single_key", preset="n4096"))
    public, parties = he.provision(PIDS)
    server_path = kits.write_server_kit(public, tmp_path / "server.hekit")
    party_paths = {p: kits.write_party_kit(parties[p], tmp_path / f"{p}.hekit") for p in PIDS}
    assert all((path.stat().st_mode & 0o777) == 0o600 for path in party_paths.values())
    public2 = kits.read_server_kit(server_path)
    parties2 = {p: kits.read_party_kit(path) for p, path in party_paths.items()}
    assert public2 == public
    ctx = RoundContext("f", 1, PIDS, 500, True, 10)
    inputs = make_inputs(ctx)
    result, _ = run_round(he, ctx, inputs, public2, parties2)
    assert_matches_plain(result, plain_round(ctx, inputs))


def test_party_refuses_a_second_decryption(he, kit):
    public, parties = kit
    ctx = RoundContext("f", 1, PIDS, 100, False, 10)
    inputs = make_inputs(ctx)
    server = he.server(ctx, public)
    sessions = {p: he.party(ctx, p, inputs[p], parties[p]) for p in PIDS}
    replies = {p: sessions[p].handle(m) for p, m in server.start().items()}
    (pid, request), = server.step(replies).items()
    sessions[pid].handle(request)
    with pytest.raises(ProtocolError):
        sessions[pid].handle(Message("he/decrypt", request.payload))
