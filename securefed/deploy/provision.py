"""`provision_federation`: one folder per party, one for the server, one for the offline CA.

    out/ca/      ca.pem, ca-key.pem            keep offline; only needed to issue more certificates
    out/server/  ca.pem, server.pem, server-key.pem, operator.pem, operator-key.pem,
                 material.bin (the protocol's server material: public), federation.json
    out/<pid>/   ca.pem, party.pem, party-key.pem, material.bin (the party's secret material,
                 e.g. its Ed25519 identity signing key for secagg), federation.json

The server folder never holds a party secret: party keys are generated and written straight into
their own folder. The operator certificate lets whoever runs the server query Status; it is not a
party and cannot open a Session.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from securefed.deploy.material import encode_material
from securefed.deploy.pki import issue, make_ca, write_atomic
from securefed.deploy.settings import FederationConfig, PartyEntry, apply_settings, check_party_id
from securefed.errors import ConfigError
from securefed.protocols import registry
from securefed.transport.tls import fingerprint_pem

DEFAULT_PORT = 7878
OPERATOR_NAME = "operator"


@dataclass(frozen=True)
class FederationPaths:
    root: Path
    ca_dir: Path
    server_dir: Path
    party_dirs: Mapping[str, Path]
    config: FederationConfig


def json_config(config: Any) -> Any:
    """The protocol config as a JSON value (it is stored in federation.json and handed to
    registry.create on every machine, so every machine builds the same protocol)."""
    if config is None:
        return None
    if hasattr(config, "model_dump"):  # pydantic model
        return config.model_dump(mode="json")
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    try:
        return json.loads(json.dumps(config))
    except (TypeError, ValueError):
        raise ConfigError("protocol_config: must be JSON-serializable (dict, pydantic model or dataclass)") from None


def provision_federation(
    out_dir: str | Path,
    parties: Sequence[str],
    server_host: str,
    protocol_name: str,
    protocol_config: Any = None,
    settings: Mapping[str, Any] | None = None,
) -> FederationPaths:
    """Create every kit of a new federation under `out_dir` (which must not contain one yet).

    settings: port, rounds, min_parties, max_round_retries, chunk_size, max_message_bytes,
    algorithm, model, timeouts (a dict of settings.Timeouts fields), app (free-form dict)."""
    root = Path(out_dir)
    ids = tuple(sorted(parties))
    for pid in ids:
        check_party_id(pid)
    if len(set(ids)) != len(ids) or not ids:
        raise ConfigError("parties: must be a non-empty list of unique ids")
    if not server_host or any(c.isspace() for c in server_host):
        raise ConfigError("server_host: must be a host name or IP address")
    if (root / "server" / "federation.json").exists():
        raise ConfigError(f"{root}: already holds a federation; use a new folder")

    cfg_json = json_config(protocol_config)
    protocol = registry.create(protocol_name, cfg_json)
    server_material, party_materials = protocol.provision(ids)
    if set(party_materials) != set(ids):
        raise ConfigError(f"protocol {protocol_name!r} provisioned material for other parties than asked")

    federation_id = secrets.token_hex(16)
    ca = make_ca(federation_id)
    names = [server_host, "localhost", "127.0.0.1"]
    server_cert = issue(ca, server_host, server_names=names)
    operator = issue(ca, OPERATOR_NAME)
    party_certs = {pid: issue(ca, pid) for pid in ids}

    base = FederationConfig(
        federation_id=federation_id,
        parties=tuple(PartyEntry(pid, fingerprint_pem(party_certs[pid].cert_pem)) for pid in ids),
        server_host=server_host,
        server_port=DEFAULT_PORT,
        server_cert_sha256=fingerprint_pem(server_cert.cert_pem),
        operator_cert_sha256=fingerprint_pem(operator.cert_pem),
        protocol=protocol_name,
        protocol_config=cfg_json,
        rounds=1,
        min_parties=len(ids),
    )
    fed = apply_settings(base, settings or {})
    fed_json = fed.to_json().encode()
    ca_pem = ca.cert_pem

    ca_dir, server_dir = root / "ca", root / "server"
    write_atomic(ca_dir / "ca.pem", ca_pem, private=False)
    write_atomic(ca_dir / "ca-key.pem", ca.key_pem, private=True)

    write_atomic(server_dir / "ca.pem", ca_pem, private=False)
    write_atomic(server_dir / "server.pem", server_cert.cert_pem, private=False)
    write_atomic(server_dir / "server-key.pem", server_cert.key_pem, private=True)
    write_atomic(server_dir / "operator.pem", operator.cert_pem, private=False)
    write_atomic(server_dir / "operator-key.pem", operator.key_pem, private=True)
    # Server material is not a party secret, but it is key material: 0600 all the same.
    write_atomic(server_dir / "material.bin", encode_material(protocol, server_material), private=True)
    write_atomic(server_dir / "federation.json", fed_json, private=False)

    party_dirs: dict[str, Path] = {}
    for pid in ids:
        d = root / pid
        write_atomic(d / "ca.pem", ca_pem, private=False)
        write_atomic(d / "party.pem", party_certs[pid].cert_pem, private=False)
        write_atomic(d / "party-key.pem", party_certs[pid].key_pem, private=True)
        write_atomic(d / "material.bin", encode_material(protocol, party_materials[pid]), private=True)
        write_atomic(d / "federation.json", fed_json, private=False)
        party_dirs[pid] = d
    for d in (ca_dir, server_dir, *party_dirs.values()):
        os.chmod(d, 0o700)
    return FederationPaths(root, ca_dir, server_dir, party_dirs, fed)
