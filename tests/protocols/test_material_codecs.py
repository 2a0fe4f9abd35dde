"""The MaterialCodec hook (dump_material / load_material) of secagg and he: versioned, kind-tagged
bytes; round trips that still aggregate; no secret in server bytes; malformed bytes refused."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from securefed.deploy.material import MaterialCodec, decode_material, encode_material
from securefed.errors import ConfigError
from securefed.protocols import registry
from securefed.protocols.base import PartyInput, RoundContext
from securefed.protocols.driver import run_round
from securefed.protocols.he import HEConfig, HEPartyMaterial, HEPublic
from securefed.protocols.he.single_key import kits as he_kits
from securefed.protocols.secagg import PartyMaterial, SecAgg, SecAggConfig, ServerMaterial
from securefed.protocols.secagg import provisioning as sa

from _protocol_helpers import TestRng


def _assert_rejected(protocol, blob: bytes, match: str | None = None) -> None:
    with pytest.raises(ValueError, match=match) as info:
        protocol.load_material(blob)
    # The deploy layer reports a bad kit as a ConfigError (one line in the CLI, no traceback).
    assert isinstance(info.value, ConfigError)


def _truncations(blob: bytes, samples: int = 200) -> list[int]:
    if len(blob) <= samples:
        return list(range(len(blob)))
    step = len(blob) / samples
    return sorted({int(i * step) for i in range(samples)} | set(range(16)) | {len(blob) - 1})


# --- secagg -----------------------------------------------------------------------------------

SA_IDS = ("p0", "p1", "p2", "p3", "p4")


@pytest.fixture()
def secagg():
    proto = registry.create("secagg", {"precision_bits": 10})
    return proto, *proto.provision(SA_IDS)


def _secagg_inputs(cfg: SecAggConfig, m: int = 40):
    """Inputs on the fixed-point grid: the secagg sum is exact, bit for bit."""
    rng = np.random.default_rng(3)
    step = cfg.clip / 2**cfg.precision_bits
    return {pid: PartyInput((rng.integers(-1024, 1024, m) * step).astype(np.float32), None, float(1 + i))
            for i, pid in enumerate(SA_IDS)}


def test_secagg_is_a_material_codec(secagg):
    assert isinstance(secagg[0], MaterialCodec)


def test_secagg_roundtrip_equal_and_kind_tagged(secagg):
    proto, sm, pm = secagg
    blob = proto.dump_material(sm)
    assert blob.startswith(sa.MAGIC) and blob[len(sa.MAGIC)] == sa.VERSION
    assert blob[len(sa.MAGIC) + 1] == sa.KIND_SERVER
    loaded = proto.load_material(blob)
    assert isinstance(loaded, ServerMaterial) and loaded == sm
    assert dict(loaded.identity_keys) == dict(sm.identity_keys)
    for pid, mat in pm.items():
        pblob = proto.dump_material(mat)
        assert pblob[len(sa.MAGIC) + 1] == sa.KIND_PARTY
        back = proto.load_material(pblob)
        assert isinstance(back, PartyMaterial) and back == mat
        assert back.party_id == pid and back.signing_key == mat.signing_key
        assert dict(back.identity_keys) == dict(mat.identity_keys)
        assert proto.dump_material(back) == pblob  # deterministic


def test_secagg_loaded_materials_give_the_same_sum(secagg):
    _, sm, pm = secagg
    cfg = SecAggConfig(precision_bits=10)
    ctx = RoundContext("fed-codec", 1, SA_IDS, 40, False, 8)
    inputs = _secagg_inputs(cfg)
    codec = SecAgg(cfg)
    sm2 = codec.load_material(codec.dump_material(sm))
    pm2 = {pid: codec.load_material(codec.dump_material(m)) for pid, m in pm.items()}
    want, _ = run_round(SecAgg(cfg, rng=TestRng(b"a")), ctx, inputs, sm, pm)
    got, _ = run_round(SecAgg(cfg, rng=TestRng(b"a")), ctx, inputs, sm2, pm2)
    np.testing.assert_array_equal(got.delta_sum, want.delta_sum)
    assert got.total_weight == want.total_weight and got.contributors == want.contributors
    exact = sum(inputs[p].weight * inputs[p].delta.astype(np.float64) for p in SA_IDS)
    np.testing.assert_array_equal(got.delta_sum, exact)
    # Loaded parties with the original server material, and a dropout the survivors must unmask.
    got2, _ = run_round(SecAgg(cfg), ctx, inputs, sm, pm2, drop_at={"p4": "secagg/masked-input"})
    assert got2.contributors == SA_IDS[:4]
    exact4 = sum(inputs[p].weight * inputs[p].delta.astype(np.float64) for p in SA_IDS[:4])
    np.testing.assert_array_equal(got2.delta_sum, exact4)


def test_secagg_server_bytes_hold_no_private_key(secagg):
    proto, sm, pm = secagg
    blob = proto.dump_material(sm)
    assert len(blob) == len(sa.MAGIC) + 2 + 4 + len(SA_IDS) * (2 + 2 + 32)  # ids + public keys only
    for mat in pm.values():
        raw = mat.signing_key
        for secret in (raw, raw.hex().encode(), raw[:16], raw[16:]):
            assert secret not in blob
    # A party blob does carry its own key (and no other party's).
    p0 = proto.dump_material(pm["p0"])
    assert pm["p0"].signing_key in p0
    assert all(pm[p].signing_key not in p0 for p in SA_IDS[1:])


def test_secagg_refuses_malformed(secagg):
    proto, sm, pm = secagg
    sblob, pblob = proto.dump_material(sm), proto.dump_material(pm["p1"])
    n = len(sa.MAGIC)
    _assert_rejected(proto, b"", "magic")
    _assert_rejected(proto, b"XXSAGGM" + sblob[n:], "magic")
    _assert_rejected(proto, he_kits.MAGIC + sblob[n:], "magic")
    _assert_rejected(proto, sblob[:n] + bytes([2]) + sblob[n + 1 :], "version")
    _assert_rejected(proto, sblob[:n + 1] + bytes([7]) + sblob[n + 2 :], "kind")
    _assert_rejected(proto, sblob + b"\0", "trailing")
    _assert_rejected(proto, pblob + b"\0", "trailing")
    for blob in (sblob, pblob):
        for cut in _truncations(blob):
            _assert_rejected(proto, blob[:cut])
    # A server blob relabelled as party (or back) does not parse as the other kind.
    _assert_rejected(proto, sblob[:n + 1] + bytes([sa.KIND_PARTY]) + sblob[n + 2 :])
    _assert_rejected(proto, pblob[:n + 1] + bytes([sa.KIND_SERVER]) + pblob[n + 2 :])
    # Another party's private key under p1's name: does not match p1's identity key.
    head = n + 2 + 2 + len(b"p1")
    swapped = pblob[:head] + pm["p2"].signing_key + pblob[head + 32 :]
    _assert_rejected(proto, swapped, "does not match")
    # A party missing from its own table.
    only_others = sa.dump_material(PartyMaterial("p1", pm["p1"].signing_key,
                                                 {k: v for k, v in pm["p1"].identity_keys.items() if k != "p1"}))
    _assert_rejected(proto, only_others, "missing")
    # Duplicated / unsorted table entries; a count larger than the data.
    keys = sm.identity_keys
    entry = lambda pid: struct.pack("<H", len(pid)) + pid.encode() + keys[pid]  # noqa: E731
    prefix = sa.MAGIC + bytes([sa.VERSION, sa.KIND_SERVER])
    _assert_rejected(proto, prefix + struct.pack("<I", 2) + entry("p0") + entry("p0"), "sorted")
    _assert_rejected(proto, prefix + struct.pack("<I", 2) + entry("p1") + entry("p0"), "sorted")
    _assert_rejected(proto, prefix + struct.pack("<I", 2**31) + entry("p0"), "count")
    _assert_rejected(proto, prefix + struct.pack("<I", 0), "count")
    _assert_rejected(proto, prefix + struct.pack("<I", 1) + struct.pack("<H", 0) + keys["p0"])
    _assert_rejected(proto, prefix + struct.pack("<I", 1) + struct.pack("<H", 2) + b"\xff\xfe" + keys["p0"], "UTF-8")


def test_secagg_dump_refuses_other_objects(secagg):
    proto = secagg[0]
    with pytest.raises(TypeError):
        proto.dump_material(b"raw bytes")
    with pytest.raises(TypeError):
        proto.dump_material(None)
    with pytest.raises(ValueError):
        proto.dump_material(ServerMaterial({"p0": b"short"}))


def test_secagg_through_the_deploy_wrapper(secagg):
    proto, sm, pm = secagg
    assert decode_material(proto, encode_material(proto, sm)) == sm
    assert decode_material(proto, encode_material(proto, pm["p3"])) == pm["p3"]
    wrapped = encode_material(proto, pm["p3"])
    corrupt = wrapped[:-40] + bytes(40)  # zeroed tail of the identity table: still the right length
    with pytest.raises(ConfigError):
        decode_material(proto, corrupt)


# --- he ---------------------------------------------------------------------------------------

HE_IDS = ("a", "b", "c")


@pytest.fixture(scope="module")
def he():
    proto = registry.create("he", HEConfig(mode="single_key", preset="n4096"))
    return proto, *proto.provision(HE_IDS)


def _he_inputs(ctx: RoundContext):
    rng = np.random.default_rng(5)
    return {pid: PartyInput((rng.standard_normal(ctx.vector_len) * 0.05).astype(np.float32), None,
                            float(rng.uniform(1, ctx.max_weight))) for pid in ctx.party_ids}


def test_he_is_a_material_codec(he):
    assert isinstance(he[0], MaterialCodec)


def test_he_roundtrip_equal_and_kind_tagged(he):
    proto, public, parties = he
    blob = proto.dump_material(public)
    assert blob.startswith(he_kits.MAGIC) and blob[len(he_kits.MAGIC)] == he_kits.ROLE_SERVER
    assert blob == he_kits.server_kit_bytes(public)  # same bytes as the kit files
    loaded = proto.load_material(blob)
    assert isinstance(loaded, HEPublic) and loaded == public
    for mat in parties.values():
        pblob = proto.dump_material(mat)
        assert pblob[len(he_kits.MAGIC)] == he_kits.ROLE_PARTY
        back = proto.load_material(pblob)
        assert isinstance(back, HEPartyMaterial) and back == mat
        assert back.secret_key_bytes == mat.secret_key_bytes


def test_he_loaded_materials_give_the_same_sum(he):
    proto, public, parties = he
    ctx = RoundContext("fed-codec", 1, HE_IDS, 300, False, 10)
    inputs = _he_inputs(ctx)
    public2 = proto.load_material(proto.dump_material(public))
    parties2 = {pid: proto.load_material(proto.dump_material(m)) for pid, m in parties.items()}
    want, _ = run_round(proto, ctx, inputs, public, parties)
    # a fresh protocol object: each party decrypts a round once (its round ledger lives in the object)
    got, _ = run_round(registry.create("he", proto.config), ctx, inputs, public2, parties2)
    assert got.contributors == want.contributors
    # CKKS noise is removed by rounding to the quantization grid: the sums agree exactly.
    np.testing.assert_allclose(got.delta_sum, want.delta_sum, rtol=0, atol=1e-9)
    assert got.total_weight == pytest.approx(want.total_weight, abs=1e-9)
    exact = sum(inputs[p].weight * inputs[p].delta.astype(np.float64) for p in HE_IDS)
    assert np.max(np.abs(got.delta_sum - exact)) <= got.stats["error_bound"]["delta_sum"] * (1 + 1e-9)


def test_he_server_bytes_hold_no_secret_key(he):
    proto, public, parties = he
    blob = proto.dump_material(public)
    sk = next(iter(parties.values())).secret_key_bytes
    assert len(sk) > 1000 and len(blob) < 1000
    mid = len(sk) // 2
    for secret in (sk, sk[mid : mid + 32], sk[-32:], sk[mid : mid + 32].hex().encode()):
        assert secret not in blob
    # The secret-key field of the server kind is empty (u32 zero at the end).
    assert blob.endswith(struct.pack("<I", 0))


def test_he_refuses_malformed(he):
    proto, public, parties = he
    sblob, pblob = proto.dump_material(public), proto.dump_material(parties["a"])
    n = len(he_kits.MAGIC)
    _assert_rejected(proto, b"", "magic")
    _assert_rejected(proto, b"SFHEKIT9" + sblob[n:], "magic")
    _assert_rejected(proto, sa.MAGIC + b"\x01" + sblob[n:], "magic")
    _assert_rejected(proto, sblob[:n] + bytes([9]) + sblob[n + 1 :], "role")
    _assert_rejected(proto, sblob + b"\0", "trailing")
    _assert_rejected(proto, pblob + b"\0", "trailing")
    for blob in (sblob, pblob):
        for cut in _truncations(blob):
            _assert_rejected(proto, blob[:cut])
    # A party blob relabelled as a server blob: refused, never read as server material with a key.
    _assert_rejected(proto, pblob[:n] + bytes([he_kits.ROLE_SERVER]) + pblob[n + 1 :], "secret key")
    _assert_rejected(proto, sblob[:n] + bytes([he_kits.ROLE_PARTY]) + sblob[n + 1 :], "no secret key")
    # Corrupt metadata and a secret key that is not SEAL's.
    meta_len = struct.unpack_from("<I", sblob, n + 1)[0]
    _assert_rejected(proto, sblob[: n + 5] + b"{" * meta_len + sblob[n + 5 + meta_len :], "metadata")
    bogus = pblob[: -len(parties["a"].secret_key_bytes)] + bytes(len(parties["a"].secret_key_bytes))
    _assert_rejected(proto, bogus, "secret key")


def test_he_dump_refuses_other_objects(he):
    with pytest.raises(TypeError):
        he[0].dump_material(b"raw bytes")


def test_he_through_the_deploy_wrapper(he):
    proto, public, parties = he
    assert decode_material(proto, encode_material(proto, public)) == public
    assert decode_material(proto, encode_material(proto, parties["b"])) == parties["b"]
    secagg = registry.create("secagg")
    with pytest.raises(ConfigError):  # a kit made for he is not fed to secagg
        decode_material(secagg, encode_material(proto, public))
