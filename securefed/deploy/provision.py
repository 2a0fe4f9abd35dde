"""`provision_federation`: the operator's side of setting up a federation.

    out/ca/      ca.pem, ca-key.pem            keep offline; only needed to issue more certificates
    out/server/  ca.pem, server.pem, server-key.pem, operator.pem, operator-key.pem,
                 material.bin (the protocol's server material: public), federation.json
    out/<pid>/   ca.pem, party.pem, federation.json, party-public.bin (the pinned public material)
                 -> the party copies these next to the keys `securefed keygen` made on its machine

Parties make their own keys (securefed/deploy/keygen.py): the operator signs their certificate
requests and pins the public halves of their protocol keys; no party private key is ever here.
Without `requests` (tests, localrun: every party on this machine) each party's keygen runs first,
into that party's own kit folder, and the operator part reads only the requests, as it would
across machines. A protocol without keygen hooks (see protocols/keygen.py) falls back to the
dealer model: the operator makes the party material (material.bin, 0600), and this is logged.
The operator certificate lets whoever runs the server query Status; it is not a party.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from securefed.deploy.keygen import (
    REQUEST,
    ROSTER,
    keygen_finish,
    keygen_party,
    protocol_of,
    read_request,
    read_roster,
    roster_members,
    write_party_public,
    write_roster,
)
from securefed.deploy.material import encode_material
from securefed.deploy.pki import check_csr, issue, issue_for_csr, make_ca, write_atomic
from securefed.deploy.roster import entry_digests, spki_of_csr
from securefed.deploy.settings import FederationConfig, PartyEntry, apply_settings, check_party_id
from securefed.errors import ConfigError
from securefed.membership import seed_commitment
from securefed.transport.tls import fingerprint_pem

_log = logging.getLogger("securefed.deploy.provision")

DEFAULT_PORT = 7878
OPERATOR_NAME = "operator"


class KeygenPhasePending(ConfigError):
    """Not a failure: roster.json (every member's key digest and seed commitment) is written and the
    parties' second keygen phase (reveal; a two-phase protocol's dealing) comes next. The command
    line prints it as the next step and exits 0."""

    def __init__(self, roster: Path, protocol_name: str, two_phase: bool, waiting: Sequence[str] = ()) -> None:
        self.roster = roster
        deal = f", and deals protocol {protocol_name!r}'s key shares" if two_phase else ""
        # A second pass that still lacks reveals names who has not revealed (a party that withholds
        # its reveal after seeing the others' forces a re-run: that must be visible).
        still = f"still no second phase from {', '.join(waiting)}. " if waiting else ""
        super().__init__(f"phase 1 done: {roster} written (every member's key digest and seed commitment); {still}"
                         f"Next: give {roster.name} to every party for its second keygen phase: each runs "
                         f"`securefed keygen --party P --out KEYS --finish {roster.name}` with the same config (it "
                         f"records the roster, then reveals its seed contribution{deal}) and hands back KEYS/request "
                         "again; then run this provision command again")


def _request_mismatch(requests: Mapping[str, Any], ids: Sequence[str]) -> str:
    """Which request folders do not match --parties, by name (the counts may well agree)."""
    extra = sorted(set(requests) - set(ids))
    missing = sorted(set(ids) - set(requests))
    parts = [f"{requests[p]} is party {p!r}'s request, and {p!r} is not in --parties" for p in extra]
    parts += [f"no request folder for party {p!r}" for p in missing]
    return f"requests: {'; '.join(parts)} (--parties: {', '.join(ids)})"


def _check_reveals(roster: Path, protocol_name: str, reqs: Mapping[str, Any]) -> None:
    """Every reveal opens its commitment, and the roster is the one roster.json published (what the
    parties revealed against: their kits would refuse any other)."""
    for pid, r in reqs.items():
        if seed_commitment(pid, r.seed_reveal) != r.seed_commit:
            raise ConfigError(f"requests: party {pid!r}'s revealed seed contribution does not match its commitment")
    try:
        listed, _ = read_roster(roster, protocol_name)
    except ConfigError as e:
        raise ConfigError(f"{e}: the roster the parties revealed against (run this provision command from "
                          "the same --out folder)") from None
    now = roster_members(protocol_name, reqs)
    changed = sorted(p for p in set(now) | set(listed) if now.get(p) != listed.get(p))
    if changed:
        raise ConfigError(f"requests: party {changed[0]!r}'s keys or seed commitment are not those {roster.name} "
                          "published; every party must reveal against one roster: start again from keygen")


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
    requests: Mapping[str, str | Path] | None = None,
) -> FederationPaths:
    """Create every kit of a new federation under `out_dir` (which must not contain one yet).

    settings: port, rounds, min_parties, max_round_retries, chunk_size, max_message_bytes,
    algorithm, model, timeouts (a dict of settings.Timeouts fields), app (free-form dict).
    requests: party id -> the request folder its `securefed keygen` made; None = make every
    party's keys here, in its kit folder (all parties on this machine: tests, localrun)."""
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

    # Nothing half-written: on any failure, remove the folders this call created.
    created = [d for d in (root / "ca", root / "server", *(root / pid for pid in ids)) if not d.exists()]
    try:
        return _provision(root, ids, server_host, protocol_name, json_config(protocol_config), settings or {}, requests)
    except BaseException:
        for d in created:
            shutil.rmtree(d, ignore_errors=True)
        if requests is None:  # across machines the roster is the output the parties need for phase 2
            (root / ROSTER).unlink(missing_ok=True)
        raise


def _provision(root: Path, ids: tuple[str, ...], server_host: str, protocol_name: str, cfg_json: Any,
               settings: Mapping[str, Any], requests: Mapping[str, str | Path] | None) -> FederationPaths:
    protocol, kg = protocol_of(protocol_name, cfg_json)
    check = getattr(protocol, "check_round_size", None)
    min_parties = settings.get("min_parties", len(ids))
    if check is not None and isinstance(min_parties, int):  # before any key is made
        try:  # e.g. threshold he: rounds below its signing quorum could never finish
            check(len(ids), min_parties)
        except ValueError as e:
            raise ConfigError(f"min_parties: {e}") from None
    local = requests is None
    if local:
        requests = {pid: keygen_party(root / pid, pid, protocol_name, cfg_json) for pid in ids}
    if set(requests) != set(ids):
        raise ConfigError(_request_mismatch(requests, ids))
    reqs = {pid: read_request(requests[pid], pid, protocol_name) for pid in ids}
    try:  # before roster.json lists anything
        for pid in ids:
            check_csr(reqs[pid].csr_pem, pid)
    except ValueError as e:
        raise ConfigError(f"requests: {e}") from None
    # Commit, then reveal (securefed.membership): roster.json fixes every key and commitment before
    # any party reveals its contribution; the kits are written only from reveals against it.
    waiting = [p for p, r in reqs.items() if r.seed_reveal is None or (kg.two_phase and r.public2 is None)]
    if waiting:
        again = len(waiting) < len(ids)  # some parties already revealed: this is the second pass
        write_roster(root / ROSTER, protocol_name, reqs)
        if not local:
            raise KeygenPhasePending(root / ROSTER, protocol_name, kg.two_phase, waiting if again else ())
        for pid in ids:
            keygen_finish(root / pid, root / ROSTER, protocol_name, cfg_json)
        reqs = {pid: read_request(requests[pid], pid, protocol_name) for pid in ids}
    _check_reveals(root / ROSTER, protocol_name, reqs)
    if kg.dealer:
        _log.warning("protocol %r has no keygen hooks: the operator makes its party material (dealer model)",
                     protocol_name)
        server_material, party_materials = protocol.provision(ids)
        if set(party_materials) != set(ids):
            raise ConfigError(f"protocol {protocol_name!r} provisioned material for other parties than asked")
        party_public: dict[str, bytes] = {}
    else:
        server_material, party_public = kg.assemble({p: r.public for p, r in reqs.items()},
                                                    {p: r.public2 for p, r in reqs.items() if r.public2 is not None})
        party_materials = {}

    federation_id = secrets.token_hex(16)
    ca = make_ca(federation_id)
    names = [server_host, "localhost", "127.0.0.1"]
    server_cert = issue(ca, server_host, server_names=names)
    operator = issue(ca, OPERATOR_NAME)
    try:
        party_certs = {pid: issue_for_csr(ca, reqs[pid].csr_pem, pid) for pid in ids}
    except ValueError as e:
        raise ConfigError(f"requests: {e}") from None

    base = FederationConfig(
        federation_id=federation_id,
        parties=tuple(PartyEntry(pid, fingerprint_pem(party_certs[pid]),
                                 *entry_digests(spki_of_csr(reqs[pid].csr_pem), protocol_name, reqs[pid].public),
                                 reqs[pid].seed_commit, reqs[pid].seed_reveal or "")
                      for pid in ids),
        server_host=server_host,
        server_port=DEFAULT_PORT,
        server_cert_sha256=fingerprint_pem(server_cert.cert_pem),
        operator_cert_sha256=fingerprint_pem(operator.cert_pem),
        protocol=protocol_name,
        protocol_config=cfg_json,
        rounds=1,
        min_parties=len(ids),
    )
    fed = apply_settings(base, settings)
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
        write_atomic(d / "party.pem", party_certs[pid], private=False)
        if kg.dealer:
            write_atomic(d / "material.bin", encode_material(protocol, party_materials[pid]), private=True)
        else:
            write_party_public(d, protocol_name, pid, party_public[pid])
        write_atomic(d / "federation.json", fed_json, private=False)
        if local:
            shutil.rmtree(d / REQUEST)
        party_dirs[pid] = d
    (root / ROSTER).unlink(missing_ok=True)
    for d in (ca_dir, server_dir, *party_dirs.values()):
        os.chmod(d, 0o700)
    return FederationPaths(root, ca_dir, server_dir, party_dirs, fed)
