"""`securefed keygen`: a party makes its own keys on its own machine; the operator only sees requests.

    <dir>/party-key.pem          TLS private key (0600)                       never leaves <dir>
    <dir>/protocol-secret.bin    the protocol's secret (0600)                 never leaves <dir>
    <dir>/seed-contribution.json 32 random bytes (0600)                       revealed at --finish
    <dir>/seen-roster.json       every member's key digest and commitment, as this party saw them
                                 before it revealed (written by --finish; checked at kit load)
    <dir>/request/               what the party hands the operator:
        party.csr.pem            certificate signing request, CN = party id
        protocol-public.bin      the protocol's phase-1 public bytes and the seed commitment
        protocol-public2.bin     phase-2 public bytes (two-phase protocols, after `keygen --finish`)
        seed-reveal.json         the seed contribution (after `keygen --finish`)

Two passes (commit, then reveal; securefed.membership): `provision --request ...` first writes
roster.json (every member's key digest and seed commitment, and a two-phase protocol's phase-1
keys) and stops; each party runs `keygen --finish roster.json`, which records that roster and only
then reveals its contribution (and runs the protocol's phase 2); the same provision command then
signs the CSRs, pins the public halves and writes each party a kit of public files (ca.pem,
party.pem, federation.json, party-public.bin) that the party copies into <dir>. A party reveals
against one roster only: a second, different roster means new keys. Files are small strict JSON
with hex fields: no pickle.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from securefed.deploy.pki import make_csr, write_atomic
from securefed.deploy.roster import CONTRIBUTION, SEEN, entry_digests, spki_of_csr, spki_of_key
from securefed.deploy.settings import check_party_id
from securefed.errors import ConfigError
from securefed.membership import seed_commitment
from securefed.protocols import registry
from securefed.protocols.keygen import Keygen, keygen_for

FORMAT = "securefed-keys/1"
KEY, SECRET, PARTY_PUBLIC = "party-key.pem", "protocol-secret.bin", "party-public.bin"
REQUEST, CSR, PUBLIC, PUBLIC2 = "request", "party.csr.pem", "protocol-public.bin", "protocol-public2.bin"
REVEAL = "seed-reveal.json"
ROSTER = "roster.json"


def _dump(kind: str, protocol: str, **fields: Any) -> bytes:
    body = {"format": FORMAT, "kind": kind, "protocol": protocol}
    for k, v in fields.items():
        body[k] = v.hex() if isinstance(v, bytes) else (
            {p: b.hex() if isinstance(b, bytes) else b for p, b in v.items()} if isinstance(v, Mapping) else v)
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
    contribution = secrets.token_hex(32)  # this party's share of the federation seed, hidden until --finish
    write_atomic(d / KEY, key_pem, private=True)
    write_atomic(d / CONTRIBUTION, _dump("contribution", protocol_name, party_id=party_id, contribution=contribution),
                 private=True)
    if not kg.dealer:  # a dealer-model protocol gets its material from the operator (material.bin)
        write_atomic(d / SECRET, _dump("secret", protocol_name, party_id=party_id, secret=secret), private=True)
    write_atomic(d / REQUEST / CSR, csr_pem, private=False)
    write_atomic(d / REQUEST / PUBLIC, _dump("public", protocol_name, party_id=party_id, public=public,
                                             seed_commit=seed_commitment(party_id, contribution)), private=False)
    return d / REQUEST


def keygen_finish(key_dir: str | Path, roster_file: str | Path, protocol_name: str, protocol_config: Any = None) -> Path:
    """Pass 2 on the party's machine, from the operator's roster.json: check our own entry, record
    the roster (seen-roster.json; a different one later is refused), then reveal our seed
    contribution and run the protocol's phase 2 (request/seed-reveal.json, protocol-public2.bin)."""
    d, roster_path = Path(key_dir), Path(roster_file)
    _, kg = protocol_of(protocol_name, protocol_config)
    cd = _load(d / CONTRIBUTION, "contribution", protocol_name)
    pid, contribution = cd.get("party_id"), _hex(d / CONTRIBUTION, cd, "contribution")
    own = read_request(d / REQUEST, str(pid), protocol_name)
    seen, roster = read_roster(roster_path, protocol_name)
    if pid not in seen:
        raise ConfigError(f"{roster_path}: roster without this party {pid!r}")
    mine = [entry_digests(spki_of_key((d / KEY).read_bytes()), protocol_name, own.public)[0], own.seed_commit]
    if seen[pid] != mine or roster[pid] != own.public:
        raise ConfigError(f"{roster_path}: the entry for {pid!r} is not this party's keys and seed commitment")
    if (d / SEEN).exists():
        if _load(d / SEEN, "seen-roster", protocol_name, pid).get("members") != seen:
            raise ConfigError(f"{d}: this party already revealed its seed contribution against another roster; "
                              "revealing again would let a late party steer the seed: make new keys "
                              "(`securefed keygen` into a new folder)")
        if (d / REQUEST / REVEAL).exists():
            # Finished against this roster already: dealing phase 2 again would hand out a second,
            # different set of key shares (threshold he), and recipients given shares of different
            # deals can never decrypt together. The request folder already holds what to hand over.
            return d / REQUEST
    else:  # recorded before anything is revealed: the kit must carry exactly this roster
        write_atomic(d / SEEN, _dump("seen-roster", protocol_name, party_id=pid, members=seen), private=False)
    if kg.two_phase:
        sd = _load(d / SECRET, "secret", protocol_name, pid)
        secret, public2 = kg.party_keygen_finish(pid, _hex(d / SECRET, sd, "secret"), roster)
        write_atomic(d / SECRET, _dump("secret", protocol_name, party_id=pid, secret=secret), private=True)
        if public2 is not None:
            write_atomic(d / REQUEST / PUBLIC2, _dump("public2", protocol_name, party_id=pid, public=public2),
                         private=False)
    write_atomic(d / REQUEST / REVEAL, _dump("reveal", protocol_name, party_id=pid, contribution=contribution),
                 private=False)
    return d / REQUEST


def read_roster(path: Path, protocol_name: str) -> tuple[dict[str, list[str]], dict[str, bytes]]:
    """roster.json: every member's [key digest, seed commitment] (sorted by party id) and phase-1
    public bytes. Raises ConfigError (one line) when it is missing or malformed."""
    rd = _load(path, "roster", protocol_name)
    members, roster = rd.get("members"), rd.get("roster")
    if not isinstance(members, dict) or not isinstance(roster, dict) or set(members) != set(roster):
        raise ConfigError(f"{path}: roster missing or malformed")
    return {p: _member(path, p, m) for p, m in sorted(members.items())}, {p: _hex(path, roster, p) for p in roster}


def _member(path: Path, pid: str, m: Any) -> list[str]:
    """A roster.json member: [key digest, seed commitment], both 64 hex digits."""
    vals = [m.get("key_sha256"), m.get("seed_commit")] if isinstance(m, dict) else []
    if len(vals) != 2 or not all(isinstance(v, str) and len(v) == 64 and not set(v) - set("0123456789abcdef")
                                 for v in vals):
        raise ConfigError(f"{path}: member {pid!r} malformed")
    return vals


@dataclass(frozen=True)
class Request:
    party_id: str
    csr_pem: bytes
    public: bytes
    public2: bytes | None
    seed_commit: str
    seed_reveal: str | None  # after `keygen --finish`

    def member(self, protocol_name: str) -> list[str]:
        """[key digest, seed commitment]: this party's entry in roster.json."""
        return [entry_digests(spki_of_csr(self.csr_pem), protocol_name, self.public)[0], self.seed_commit]


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
    public2 = reveal = None
    if (d / PUBLIC2).exists():
        public2 = _hex(d / PUBLIC2, _load(d / PUBLIC2, "public2", protocol_name, party_id), "public")
    commit = pd.get("seed_commit")
    if not isinstance(commit, str) or len(commit) != 64:
        raise ConfigError(f"{d / PUBLIC}: no seed commitment (made by an older `securefed keygen`: run it again)")
    if (d / REVEAL).exists():
        reveal = _hex(d / REVEAL, _load(d / REVEAL, "reveal", protocol_name, party_id), "contribution").hex()
    return Request(party_id, (d / CSR).read_bytes(), _hex(d / PUBLIC, pd, "public"), public2, commit, reveal)


def roster_members(protocol_name: str, requests: Mapping[str, Request]) -> dict[str, list[str]]:
    return {p: requests[p].member(protocol_name) for p in sorted(requests)}


def write_roster(path: Path, protocol_name: str, requests: Mapping[str, Request]) -> None:
    """roster.json: every member's phase-1 public bytes, key digest and seed commitment."""
    members = {p: dict(zip(("key_sha256", "seed_commit"), m)) for p, m in roster_members(protocol_name, requests).items()}
    write_atomic(path, _dump("roster", protocol_name, roster={p: r.public for p, r in requests.items()},
                             members=members), private=False)


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
