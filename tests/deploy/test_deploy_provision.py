"""Provisioning: kit layout, permissions, pinned fingerprints, key material through the codec hook,
and the server folder holding no party secret."""

from __future__ import annotations

import json
import os
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from securefed.deploy.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from securefed.deploy.kit import load_party_kit, load_server_kit
from securefed.deploy.provision import provision_federation
from securefed.deploy.settings import load_federation
from securefed.errors import ConfigError
from securefed.protocols import registry
from securefed.transport.tls import fingerprint_pem


class _Keyed:
    """A stand-in protocol with secret per-party material and the MaterialCodec hook."""

    name = "test-keyed"

    def __init__(self, config=None):
        self.config = config

    def provision(self, party_ids):
        secrets_ = {pid: os.urandom(32) for pid in party_ids}
        return b"PUB" + ",".join(party_ids).encode(), {pid: b"SEC" + s for pid, s in secrets_.items()}

    def dump_material(self, material):
        return bytes(material)

    def load_material(self, data):
        return bytes(data)


class _KeyedNoCodec(_Keyed):
    name = "test-keyed-nocodec"
    dump_material = None  # type: ignore[assignment]
    load_material = None  # type: ignore[assignment]


if "test-keyed" not in registry.names():
    registry.register("test-keyed", _Keyed)
    registry.register("test-keyed-nocodec", _KeyedNoCodec)

PARTIES = ["alice", "bob", "carol"]


def _provision(tmp_path, protocol="test-keyed", **settings):
    return provision_federation(tmp_path / "fed", PARTIES, "fed.example.org", protocol, {"k": 1},
                                {"port": 9443, "rounds": 3, **settings})


def test_layout_permissions_and_federation_file(tmp_path):
    fed = _provision(tmp_path, algorithm="fedavg", model="tiny", app={"vector_len": 4})
    assert sorted(p.name for p in (tmp_path / "fed").iterdir()) == ["alice", "bob", "ca", "carol", "server"]
    for d in [fed.server_dir, fed.ca_dir, *fed.party_dirs.values()]:
        assert stat.S_IMODE(d.stat().st_mode) == 0o700
        assert not [p for p in d.iterdir() if p.name.startswith(".")]  # no temp file left behind
        for p in d.iterdir():
            private = p.name.endswith("-key.pem") or p.name in ("material.bin", "protocol-secret.bin",
                                                                            "seed-contribution.json")
            assert stat.S_IMODE(p.stat().st_mode) == (0o600 if private else 0o644), p
    cfg = load_federation(fed.server_dir)
    assert cfg == fed.config and cfg.address == "fed.example.org:9443"
    assert (cfg.rounds, cfg.min_parties, cfg.algorithm, cfg.model, cfg.protocol_config) == (3, 3, "fedavg", "tiny", {"k": 1})
    for pid, d in fed.party_dirs.items():
        assert (d / "federation.json").read_bytes() == (fed.server_dir / "federation.json").read_bytes()
        kit = load_party_kit(d)
        assert kit.role == pid
        assert dict((p.id, p.cert_sha256) for p in cfg.parties)[pid] == fingerprint_pem((d / "party.pem").read_bytes())
        _, material = kit.protocol_and_material()
        assert material.startswith(b"SEC") and len(material) == 35
    assert load_server_kit(fed.server_dir).protocol_and_material()[1].startswith(b"PUB")
    raw = json.loads((fed.server_dir / "federation.json").read_text())
    assert raw["timeouts"]["stage_s"] > 0 and raw["chunk_size"] > 0 and raw["max_message_bytes"] > 0
    # federation ids are random
    assert provision_federation(tmp_path / "fed2", PARTIES, "h", "plain").config.federation_id != cfg.federation_id


def test_server_folder_holds_no_party_secret(tmp_path):
    fed = _provision(tmp_path)
    secrets_: list[bytes] = []
    for d in fed.party_dirs.values():
        pem = (d / "party-key.pem").read_bytes()
        key = load_pem_private_key(pem, None)
        scalar = key.private_numbers().private_value.to_bytes(32, "big")
        der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        material = load_party_kit(d).protocol_and_material()[1]
        secrets_ += [pem, der, scalar, scalar.hex().encode(), material, material[3:], material[3:].hex().encode()]
    blobs = [p.read_bytes() for p in fed.server_dir.rglob("*") if p.is_file()]
    assert len(blobs) == 7
    for blob in blobs:
        for secret in secrets_:
            assert secret not in blob


def test_refusals(tmp_path):
    fed = _provision(tmp_path)
    with pytest.raises(ConfigError, match="already holds"):
        _provision(tmp_path)
    with pytest.raises(ConfigError, match="invalid party id"):
        provision_federation(tmp_path / "x", ["ok", "../evil"], "h", "plain")
    with pytest.raises(ConfigError, match="invalid party id"):
        provision_federation(tmp_path / "x", ["server"], "h", "plain")
    with pytest.raises(ConfigError, match="unknown key"):
        provision_federation(tmp_path / "x", ["a"], "h", "plain", None, {"rouns": 2})
    with pytest.raises(ConfigError, match="min_parties"):
        provision_federation(tmp_path / "x", ["a"], "h", "plain", None, {"min_parties": 2})
    with pytest.raises(ConfigError, match="dump_material"):
        provision_federation(tmp_path / "y", ["a"], "h", "test-keyed-nocodec")
    # A kit does not accept another party's certificate or a foreign federation file.
    (fed.party_dirs["alice"] / "party.pem").write_bytes((fed.party_dirs["bob"] / "party.pem").read_bytes())
    with pytest.raises(ConfigError):
        load_party_kit(fed.party_dirs["alice"])


def test_checkpoint_roundtrip_and_corruption(tmp_path):
    fid = "ab" * 16
    path = tmp_path / "state" / "checkpoint.bin"
    assert load_checkpoint(path, fid) is None
    save_checkpoint(path, Checkpoint(fid, 4, b"state-bytes"))
    assert load_checkpoint(path, fid) == Checkpoint(fid, 4, b"state-bytes")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(ConfigError, match="another federation"):
        load_checkpoint(path, "cd" * 16)
    data = bytearray(path.read_bytes())
    data[40] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="corrupt"):
        load_checkpoint(path, fid)
