"""Threshold `he`: key generation on the parties' side, rounds against plain for random federation
sizes, thresholds and dropout sets at the decryption stage, aborts, garbage answers, the ledger and
the material codec."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from securefed.errors import MaterialError
from securefed.protocols import registry
from securefed.protocols.base import PartyInput, ProtocolAbort, RoundContext
from securefed.protocols.driver import run_round
from securefed.protocols.he import HE, HEConfig, rlwe
from securefed.protocols.he.threshold import keys as tkeys
from securefed.protocols.he.threshold import layout as tl
from securefed.protocols.he.threshold import scheme
from securefed.protocols.he.threshold.party import DECRYPT_STAGE, INPUT_STAGE, SIGN_STAGE

M = 700


def make_inputs(ctx: RoundContext, seed: int) -> dict[str, PartyInput]:
    rng = np.random.default_rng(seed)
    out = {}
    for pid in ctx.party_ids:
        ctl = (rng.standard_normal(ctx.vector_len) * 0.1).astype(np.float32) if ctx.has_control else None
        out[pid] = PartyInput((rng.standard_normal(ctx.vector_len) * 0.1).astype(np.float32), ctl,
                              float(rng.integers(1, ctx.max_weight + 1)))
    return out


def plain_sum(inputs: dict[str, PartyInput], ids) -> tuple[np.ndarray, np.ndarray | None, float]:
    d = sum(inputs[p].weight * inputs[p].delta.astype(np.float64) for p in ids)
    c = None
    if inputs[ids[0]].control_delta is not None:
        c = sum(inputs[p].control_delta.astype(np.float64) for p in ids)
    return d, c, sum(inputs[p].weight for p in ids)


def assert_close_to_plain(result, inputs) -> None:
    d, c, w = plain_sum(inputs, result.contributors)
    bound = result.stats["error_bound"]
    assert np.max(np.abs(result.delta_sum - d)) <= bound["delta_sum"]
    assert abs(result.total_weight - w) <= bound["total_weight"] + 1e-12
    if c is not None:
        assert np.max(np.abs(result.control_sum - c)) <= bound["control_sum"]
    # not vacuous: the sums are far larger than the bound
    assert np.max(np.abs(d)) > 100 * bound["delta_sum"]


@pytest.mark.parametrize("seed", range(5))
def test_random_federations_thresholds_and_decryption_dropouts(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(2, 7))
    frac = float(rng.uniform(0, 0.9))
    ids = tuple(f"p{i}" for i in range(n))
    he = HE(HEConfig(threshold_fraction=frac))
    public, parties = he.provision(ids)
    t = public.threshold
    q = tl.quorum(n, t)
    assert t == tkeys.threshold_for(n, frac) and 2 <= t <= q <= n and 2 * q - n >= t
    # a selection of >= q parties; some drop at decryption, keeping >= t
    k = int(rng.integers(q, n + 1))
    selected = tuple(sorted(rng.choice(ids, size=k, replace=False)))
    n_drop = int(rng.integers(0, k - t + 1))
    drop = {p: DECRYPT_STAGE for p in rng.choice(selected, size=n_drop, replace=False)}
    ctx = RoundContext("fed", seed, selected, M, bool(seed % 2), 64)
    inputs = make_inputs(ctx, seed)
    result, traffic = run_round(he, ctx, inputs, public, parties, drop_at=drop)
    assert result.contributors == selected
    assert len(result.stats["decryptors"]) >= t and not set(result.stats["decryptors"]) & set(drop)
    assert traffic.stages[:2] == [INPUT_STAGE, SIGN_STAGE] and set(traffic.stages[2:]) == {DECRYPT_STAGE}
    assert result.stats["excluded"] == ()
    assert_close_to_plain(result, inputs)


def _four_parties(threshold_fraction: float, seed: int, drop_at: dict[str, str]):
    """One round of 4 selected key holders with `drop_at` dropouts -> (result, inputs)."""
    ids = ("a", "b", "c", "d")
    he = HE(HEConfig(threshold_fraction=threshold_fraction))
    ctx = RoundContext("fed", 1, ids, M, False, 10)
    inputs = make_inputs(ctx, seed)
    return run_round(he, ctx, inputs, *he.provision(ids), drop_at=drop_at)[0], inputs


def test_input_dropouts_leave_the_survivors_sum():
    # t = 2, quorum 3: b's upload is missing, d falls silent at decryption
    result, inputs = _four_parties(0.3, 1, {"b": INPUT_STAGE, "d": DECRYPT_STAGE})
    assert result.contributors == ("a", "c", "d")
    assert_close_to_plain(result, inputs)


def test_too_few_signatures_or_decryptors_abort():
    with pytest.raises(ProtocolAbort, match="quorum needs 4"):
        _four_parties(0.6, 2, {"a": SIGN_STAGE})  # t = 3, quorum 4
    with pytest.raises(ProtocolAbort, match="t=3"):
        _four_parties(0.6, 2, {"a": DECRYPT_STAGE, "b": DECRYPT_STAGE})


def test_reply_bound_per_stage_admits_honest_replies_only():
    ids = ("a", "b", "c")
    he = HE(HEConfig(threshold_fraction=0.0))  # t = 2
    public, parties = he.provision(ids)
    ctx = RoundContext("fed", 0, ids, M, False, 10)
    inputs = make_inputs(ctx, 5)
    server = he.server(ctx, public)
    sessions = {p: he.party(ctx, p, inputs[p], parties[p]) for p in ids}
    outbound = server.start()
    while not server.done:
        bound = server.max_reply_bytes()
        replies = {p: sessions[p].handle(m) for p, m in outbound.items()}
        # honest replies fit, with at most ~1 KiB to spare (a tight bound: bigger ones are dropped)
        assert all(len(r.payload) <= bound <= len(r.payload) + 1024 for r in replies.values())
        outbound = server.step(replies)
    assert_close_to_plain(server.result(), inputs)


def test_precision_is_secaggs():
    """Same fixed-point codec as secagg: the same per-coordinate error bound for the same round."""
    ids = ("a", "b", "c")
    he, sa = HE(), registry.create("secagg")
    public, parties = he.provision(ids)
    ctx = RoundContext("fed", 0, ids, M, False, 50)
    inputs = make_inputs(ctx, 4)
    he_res, _ = run_round(he, ctx, inputs, public, parties)
    sm, pm = sa.provision(ids)
    sa_res, _ = run_round(sa, ctx, inputs, sm, pm)
    assert he_res.stats["error_bound"]["delta_sum"] == sa_res.stats["error_bound"]


def test_noise_budget_is_sized_from_the_security_parameter():
    ring = rlwe.ring_for()
    b40 = scheme.Budget.size(ring, 10, 40)
    b30 = scheme.Budget.size(ring, 10, 30)
    assert b40.flood_bits - b30.flood_bits == 10
    # every answer of a round (answers_per_round of them) smudges the sum's encryption noise
    assert 2.0**b40.flood_bits >= 2.0**40 * ring.n * b40.err_bound * scheme.answers_per_round(10)
    assert b40.err_bound + 10 * 2.0**b40.flood_bits < 2.0 ** (b40.delta_bits - 2)
    assert b40.delta_bits + b40.payload_bits < np.log2(float(ring.modulus))


# -- keygen ------------------------------------------------------------------------------------


def test_keygen_operator_sees_public_bytes_only_and_parties_agree():
    label, ids = "fed-x", ("a", "b", "c")
    phase1 = {p: tkeys.party_keygen(label, p) for p in ids}
    roster = {p: pub for p, (_, pub) in phase1.items()}
    phase2 = {p: tkeys.party_keygen_finish(sec, roster) for p, (sec, _) in phase1.items()}
    public, bundles = tkeys.assemble(roster, {p: pub for p, (_, pub) in phase2.items()})
    mats = {p: tkeys.party_material(phase2[p][0], bundles[p]) for p in ids}
    assert all(m.public == public and m.public.key_id == public.key_id for m in mats.values())
    # no secret of any party is in anything the operator handled
    handled = b"".join(list(roster.values()) + [pub for _, pub in phase2.values()] + list(bundles.values()))
    for p, m in mats.items():
        assert tkeys.elem_bytes(m.s_ntt) not in handled
        assert m.sign_key not in handled
        for share in m.shares.values():
            assert tkeys.elem_bytes(share) not in handled
    # the collective key is sum b_i: b + a * sum s_i is small
    ring = rlwe.ring_for()
    s = sum((m.s_ntt for m in mats.values()), np.zeros_like(public.b_ntt)) % np.array(ring.primes, dtype=np.uint64).reshape(-1, 1)
    e = ring.intt(ring.add(public.b_ntt, ring.mul(rlwe.crs(ring, label.encode()), s)))
    assert max(abs(int(v)) for v in ring.to_centered_ints(e)) <= 3 * 21


def test_material_codec_roundtrip_and_tamper():
    he = HE()
    public, parties = he.provision(("a", "b"))
    assert he.load_material(he.dump_material(public)) == public
    assert he.load_material(he.dump_material(parties["a"])) == parties["a"]
    blob = bytearray(he.dump_material(parties["b"]))
    blob[-3] ^= 0xFF  # a residue of the last share: out of range or a different share
    try:
        loaded = he.load_material(bytes(blob))
        assert loaded != parties["b"]
    except MaterialError:
        pass
    with pytest.raises(MaterialError, match="he threshold kit"):
        he.load_material(he.dump_material(public)[:-10])
    server_blob = bytearray(he.dump_material(public))
    with pytest.raises(MaterialError):
        he.load_material(bytes(server_blob[:7]) + b"\x01" + bytes(server_blob[8:]))  # server kit relabelled party


def test_material_carries_the_signed_phase1_keys_the_fingerprints_cover():
    from securefed.protocols.he.threshold import kits as tkits

    he = HE()
    public, parties = he.provision(("a", "b", "c"))
    assert he.public_roster(public) == he.public_roster(parties["b"]) and set(he.public_roster(public)) == {"a", "b", "c"}
    assert all(tkeys.Phase1.parse(raw).party_id == pid for pid, raw in he.public_roster(public).items())
    assert he.public_roster(he.load_material(he.dump_material(parties["c"]))) == he.public_roster(public)
    # a phase-1 key moved to another member is refused when the material is read
    swapped = dataclasses.replace(public, phase1=(public.phase1[1], public.phase1[0], public.phase1[2]))
    with pytest.raises(MaterialError, match="phase-1 key of 'a'"):
        he.load_material(tkits.dump(swapped))
    # a kit written before phase-1 keys (SFHETK2) loads and names none: the roster check refuses it
    old = tkits.OLD_MAGIC + tkits.dump(dataclasses.replace(public, phase1=()))[len(tkits.MAGIC):]
    assert he.public_roster(he.load_material(old)) == {}


def test_a_configuration_whose_rounds_cannot_finish_is_refused_with_one_line(tmp_path):
    from securefed.config import load_config
    from securefed.deploy.provision import provision_federation
    from securefed.errors import ConfigError

    # 10 key holders, t = 6, quorum 8: a round of 7 could have decryptors answer and never finish
    with pytest.raises(ConfigError, match="rounds select 7 of 10 parties but need 8 .t=6 decryptors, a quorum of 8"):
        load_config(None, ["parties=10", "sampling.count=7", "aggregation.protocol=he"])
    with pytest.raises(ConfigError, match="need 9 .*min_contributors=9"):
        load_config(None, ["parties=10", "sampling.count=8", "aggregation.protocol=he", "aggregation.he.min_contributors=9"])
    assert load_config(None, ["parties=10", "sampling.count=8", "aggregation.protocol=he"]).aggregation.protocol == "he"
    # deployment: min_parties below the quorum is refused when the federation is provisioned
    with pytest.raises(ConfigError, match="min_parties: he: rounds select 3 of 4 parties but need 4"):
        provision_federation(tmp_path / "fed", ["a", "b", "c", "d"], "localhost", "he", None, {"min_parties": 3})
    assert not (tmp_path / "fed").exists() or not any((tmp_path / "fed").iterdir())  # refused before any key
