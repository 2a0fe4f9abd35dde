"""`securefed keygen`: a party makes its own keys on its own machine; the operator only sees requests.

    <dir>/party-key.pem          TLS private key (0600)                       never leaves <dir>
    <dir>/protocol-secret.bin    the protocol's secret (0600)                 never leaves <dir>
    <dir>/request/               what the party hands the operator:
        party.csr.pem            certificate signing request, CN = party id
        protocol-public.bin      the protocol's phase-1 public bytes
        protocol-public2.bin     phase-2 public bytes (two-phase protocols, after `keygen --finish`)

The operator's `provision --requests <dir>/request ...` signs the CSRs, pins the public halves
and writes each party a kit of public files (ca.pem, party.pem, federation.json, party-public.bin)
that the party copies into <dir>. Files are small strict JSON with hex fields: no pickle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from securefed.deploy.pki import make_csr, write_atomic
from securefed.deploy.settings import check_party_id
from securefed.errors import ConfigError
from securefed.protocols import registry
from securefed.protocols.keygen import Keygen, keygen_for

FORMAT = "securefed-keys/1"
KEY, SECRET, PARTY_PUBLIC = "party-key.pem", "protocol-secret.bin", "party-public.bin"
REQUEST, CSR, PUBLIC, PUBLIC2 = "request", "party.csr.pem", "protocol-public.bin", "protocol-public2.bin"
ROSTER = "roster.json"


def _dump(kind: str, protocol: str, **fields: Any) -> bytes:
    body = {"format": FORMAT, "kind": kind, "protocol": protocol}
    for k, v in fields.items():
        body[k] = v.hex() if isinstance(v, bytes) else {p: b.hex() for p, b in v.items()} if isinstance(v, Mapping) else v
    return (json.dumps(body, sort_keys=True) + "\n").encode()


def _load(path: Path, kind: str, protocol: str, party_id: str | None = None) -> dict[str, Any]:
    """A keygen file of this kind and protocol (and, when given, made for `party_id`)."""
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: cannot read ({e})") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT or d.get("kind") != kind:
        raise ConfigError(f"{path}: not a {kind} file")
    if d.get("protocol") != protocol:
        raise ConfigError(f"{path}: made for protocol {d.get('protocol')!r}, this federation runs {protocol!r}")
    if party_id is not None and d.get("party_id") != party_id:
        raise ConfigError(f"{path}: made for party {d.get('party_id')!r}, not {party_id!r}")
    return d


def _hex(path: Path, d: Mapping[str, Any], key: str) -> bytes:
    try:
        return bytes.fromhex(d[key])
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"{path}: field {key} missing or not hex") from None


def protocol_of(name: str, config: Any) -> tuple[Any, Keygen]:
    protocol = registry.create(name, config)
    return protocol, keygen_for(protocol)


def keygen_party(out_dir: str | Path, party_id: str, protocol_name: str, protocol_config: Any = None) -> Path:
    """Phase 1 on the party's machine. Returns the request folder to hand the operator. Refuses to
    overwrite existing keys."""
    check_party_id(party_id)
    d = Path(out_dir)
    if (d / KEY).exists() or (d / SECRET).exists():
        raise ConfigError(f"{d}: already holds keys; use a new folder")
    _, kg = protocol_of(protocol_name, protocol_config)
    key_pem, csr_pem = make_csr(party_id)
    secret, public = kg.party_keygen(party_id)
    write_atomic(d / KEY, key_pem, private=True)
    if not kg.dealer:  # a dealer-model protocol gets its material from the operator (material.bin)
        write_atomic(d / SECRET, _dump("secret", protocol_name, party_id=party_id, secret=secret), private=True)
    write_atomic(d / REQUEST / CSR, csr_pem, private=False)
    write_atomic(d / REQUEST / PUBLIC, _dump("public", protocol_name, party_id=party_id, public=public), private=False)
    return d / REQUEST


def keygen_finish(key_dir: str | Path, roster_file: str | Path, protocol_name: str, protocol_config: Any = None) -> Path:
    """Phase 2 on the party's machine, from the operator's roster of phase-1 public keys: updates the
    secret and writes request/protocol-public2.bin (if the protocol has something to deal)."""
    d, roster_path = Path(key_dir), Path(roster_file)
    _, kg = protocol_of(protocol_name, protocol_config)
    sd = _load(d / SECRET, "secret", protocol_name)
    pid, secret = sd.get("party_id"), _hex(d / SECRET, sd, "secret")
    rd = _load(roster_path, "roster", protocol_name)
    roster = rd.get("roster")
    if not isinstance(roster, dict) or pid not in roster:
        raise ConfigError(f"{roster_path}: roster missing or without this party {pid!r}")
    roster_b = {p: _hex(roster_path, roster, p) for p in roster}
    secret, public2 = kg.party_keygen_finish(pid, secret, roster_b)
    write_atomic(d / SECRET, _dump("secret", protocol_name, party_id=pid, secret=secret), private=True)
    if public2 is not None:
        write_atomic(d / REQUEST / PUBLIC2, _dump("public2", protocol_name, party_id=pid, public=public2), private=False)
    return d / REQUEST


@dataclass(frozen=True)
class Request:
    party_id: str
    csr_pem: bytes
    public: bytes
    public2: bytes | None


def request_party(request_dir: str | Path) -> str:
    """The party id a request folder is for (as its public-key file says)."""
    path = Path(request_dir) / PUBLIC
    try:
        pid = json.loads(path.read_text()).get("party_id")
    except (OSError, ValueError, AttributeError) as e:
        raise ConfigError(f"{path}: not a keygen request ({e})") from None
    if not isinstance(pid, str):
        raise ConfigError(f"{path}: no party id")
    return pid


def read_request(request_dir: str | Path, party_id: str, protocol_name: str) -> Request:
    """Operator: one party's request folder. The CSR itself is checked when it is signed."""
    d = Path(request_dir)
    if not (d / CSR).is_file():
        raise ConfigError(f"{d / CSR}: missing (run `securefed keygen` on the party's machine)")
    pd = _load(d / PUBLIC, "public", protocol_name, party_id)
    public2 = None
    if (d / PUBLIC2).exists():
        public2 = _hex(d / PUBLIC2, _load(d / PUBLIC2, "public2", protocol_name, party_id), "public")
    return Request(party_id, (d / CSR).read_bytes(), _hex(d / PUBLIC, pd, "public"), public2)


def write_roster(path: Path, protocol_name: str, requests: Mapping[str, Request]) -> None:
    write_atomic(path, _dump("roster", protocol_name, roster={p: r.public for p, r in requests.items()}), private=False)


def write_party_public(kit_dir: Path, protocol_name: str, party_id: str, public: bytes) -> None:
    write_atomic(kit_dir / PARTY_PUBLIC, _dump("party-public", protocol_name, party_id=party_id, public=public),
                 private=False)


def load_party_secret_material(kit_dir: Path, party_id: str, protocol_name: str, kg: Keygen) -> Any:
    """On the party's machine: its secret + the operator's party-public.bin -> party material."""
    sd = _load(kit_dir / SECRET, "secret", protocol_name)
    pd = _load(kit_dir / PARTY_PUBLIC, "party-public", protocol_name)
    if sd.get("party_id") != party_id or pd.get("party_id") != party_id:
        raise ConfigError(f"{kit_dir}: protocol keys are not those of party {party_id!r}")
    try:
        return kg.party_material(party_id, _hex(kit_dir / SECRET, sd, "secret"), _hex(kit_dir / PARTY_PUBLIC, pd, "public"))
    except ValueError as e:  # MaterialError is a ValueError and a ConfigError
        raise ConfigError(f"{kit_dir}: {e}") from None
