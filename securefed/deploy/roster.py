"""The roster a person can check: key fingerprints, pinning, and the membership rule of a federation.

Each roster entry of federation.json carries the party's key digest (its TLS public key and its
protocol public key, `securefed.membership.key_sha256`) and the SHA-256 of its protocol public key.
A party checks, when its kit loads:
- its own entry is its own keys (an operator cannot substitute them);
- every entry's protocol key is the one its protocol material will use (protocols that expose
  `public_roster(material)`: secagg's pinned identity keys, threshold he's signed phase-1 keys, which
  fix each member's key share b_j and the key its Shamir shares were dealt to), so the listed
  fingerprints are the keys that protect its update;
- when the kit holds `pinned-fingerprints.txt` (fingerprints compared out of band, one
  `party-id  xxxx xxxx ...` a line), every roster member is pinned and matches: a roster that
  differs is refused.
- commit-then-reveal (securefed.membership): every member's seed contribution matches the
  commitment it handed in, and the roster (every member's key digest and commitment) is exactly the
  one this party recorded at `keygen --finish` before it revealed its own (`seen-roster.json`); a
  party that committed refuses a roster without commitments (no downgrade to the grindable seed).
The fingerprints and the revealed contributions seed every round's invited set (`membership_of`),
so neither the operator nor a party that makes its keys last can pick them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pydantic import ValidationError

from securefed.deploy.settings import FederationConfig
from securefed.errors import ConfigError
from securefed.membership import (
    Membership,
    SamplingConfig,
    first_error,
    key_sha256,
    normalise_fingerprint,
    seed_commitment,
    short_fingerprint,
)

PINS = "pinned-fingerprints.txt"
CONTRIBUTION, SEEN = "seed-contribution.json", "seen-roster.json"  # in a party's keys folder (deploy.keygen)
_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def spki_of_csr(csr_pem: bytes) -> bytes:
    return x509.load_pem_x509_csr(csr_pem).public_key().public_bytes(*_SPKI)


def spki_of_key(key_pem: bytes) -> bytes:
    return serialization.load_pem_private_key(key_pem, None).public_key().public_bytes(*_SPKI)


def entry_digests(tls_spki: bytes, protocol_name: str, protocol_public: bytes) -> tuple[str, str]:
    """(key_sha256, protocol_key_sha256) of one party, as federation.json lists them."""
    proto = hashlib.sha256(protocol_public).hexdigest()
    return key_sha256(tls_spki, protocol_name, proto), proto


def fingerprints(fed: FederationConfig) -> dict[str, str]:
    """Party id -> its short fingerprint, as people compare them."""
    return {p.id: short_fingerprint(p.key_sha256) if p.key_sha256 else "(none: provisioned before fingerprints)"
            for p in fed.parties}


def sampling_of(fed: FederationConfig) -> SamplingConfig:
    """The federation's sampling rule: the securefed config's `sampling` section (FL apps keep the
    whole config in app.config), else app.sampling (protocol-only apps), else everyone."""
    raw = fed.app.get("config", {}).get("sampling") if isinstance(fed.app.get("config"), dict) else None
    raw = raw if raw is not None else fed.app.get("sampling", {})
    try:
        return SamplingConfig.from_stored(raw)
    except ValidationError as e:
        raise ConfigError(f"federation.json: sampling settings invalid ({first_error(e)})") from None


def membership_of(fed: FederationConfig) -> Membership:
    """The rule both the coordinator and every party apply, from federation.json alone."""
    s = sampling_of(fed)
    n = s.per_round(len(fed.parties))
    floor = 1 if fed.protocol == "plain" else s.min_round_size
    if n < floor:
        raise ConfigError(f"federation.json: sampling invites {n} parties a round, below "
                          f"sampling.min_round_size={floor}")
    reveals = {p.id: p.seed_reveal for p in fed.parties} if all(p.seed_reveal for p in fed.parties) else None
    return Membership.from_roster({p.id: p.key_sha256 for p in fed.parties}, s.count, s.fraction, floor, reveals,
                                  s.rule)


def load_pins(path: Path) -> dict[str, str]:
    """`party-id  fingerprint` lines (# comments, blank lines ignored) -> {party id: 32 hex digits}."""
    pins: dict[str, str] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read pinned fingerprints ({e})") from None
    for n, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        pid, _, fp = line.partition(" ")
        try:
            pins[pid] = normalise_fingerprint(fp)
        except ValueError as e:
            raise ConfigError(f"{path}:{n}: {e}") from None
    return pins


def check_roster(kit_dir: Path, role: str, fed: FederationConfig, protocol: Any, material: Any) -> None:
    """Raises ConfigError (one line) unless the roster is what this party can vouch for (see above)."""
    entries = {p.id: p for p in fed.parties}
    publics: Mapping[str, bytes] | None = None
    hook = getattr(protocol, "public_roster", None)
    if callable(hook) and material is not None:
        publics = hook(material)
    if publics is not None:
        if set(publics) != set(entries):  # e.g. an extra share holder the roster does not name
            odd = sorted(set(publics) ^ set(entries))[0]
            raise ConfigError(f"roster: the protocol material and federation.json disagree on member {odd!r}")
        for pid, entry in entries.items():
            if entry.protocol_key_sha256 and hashlib.sha256(publics.get(pid, b"")).hexdigest() != entry.protocol_key_sha256:
                raise ConfigError(f"roster: the protocol key of {pid!r} in the material is not the one federation.json lists")
    own = entries[role]
    if own.key_sha256 and publics is not None:
        tls = spki_of_key((kit_dir / "party-key.pem").read_bytes())
        if entry_digests(tls, fed.protocol, publics.get(role, b""))[0] != own.key_sha256:
            raise ConfigError(f"roster: the fingerprint federation.json lists for {role!r} is not this party's keys")
    check_reveals(kit_dir, fed)
    pins_path = kit_dir / PINS
    if not pins_path.exists():
        return
    pins = load_pins(pins_path)
    for pid, entry in entries.items():
        if pid not in pins:
            raise ConfigError(f"roster: {pid!r} is in federation.json but not pinned in {PINS}")
        if entry.key_sha256[:len(pins[pid])] != pins[pid]:
            raise ConfigError(f"roster: {pid!r} has fingerprint {short_fingerprint(entry.key_sha256)}, "
                              f"pinned {short_fingerprint(pins[pid])}: refusing this roster")
    missing = sorted(set(pins) - set(entries))
    if missing:
        raise ConfigError(f"roster: pinned {missing[0]!r} is not in federation.json")


def _opens(p: Any) -> bool:
    """A member's revealed seed contribution opens the commitment it handed in."""
    try:
        return bool(p.seed_reveal) and seed_commitment(p.id, p.seed_reveal) == p.seed_commit
    except ValueError:  # a reveal that is not hex
        return False


def check_reveals(kit_dir: Path, fed: FederationConfig) -> None:
    """Commit-then-reveal at kit load (module docstring); raises ConfigError (one line)."""
    committed = [p for p in fed.parties if p.seed_commit]
    for p in fed.parties if committed else ():  # a committed roster: every member revealed and opens
        if not _opens(p):
            raise ConfigError(f"roster: the seed contribution federation.json reveals for {p.id!r} does not match "
                              "its commitment")
    if not committed and not (kit_dir / CONTRIBUTION).exists():
        return  # a federation provisioned before commit-reveal (its seed is grindable: docs/threat-model.md)
    try:
        seen = json.loads((kit_dir / SEEN).read_text()).get("members")
    except (OSError, ValueError, AttributeError):
        raise ConfigError(f"roster: no {SEEN} in {kit_dir}: this party never revealed its seed contribution against "
                          "a roster (`securefed keygen --finish roster.json`), so it cannot vouch for this one") from None
    if {p.id: [p.key_sha256, p.seed_commit] for p in fed.parties} != seen:
        raise ConfigError("roster: federation.json is not the roster this party revealed its seed contribution "
                          f"against ({SEEN}): a member's key or commitment changed after the reveals")


def request_fingerprint(request_dir: str | Path, protocol_name: str) -> str:
    """The short fingerprint of a `securefed keygen` request, as federation.json will list it."""
    from securefed.deploy.keygen import read_request, request_party

    req = read_request(request_dir, request_party(request_dir), protocol_name)
    return short_fingerprint(entry_digests(spki_of_csr(req.csr_pem), protocol_name, req.public)[0])


def roster_lines(kit_dir: str | Path) -> list[str]:
    """`party-id  fingerprint` per roster member of a kit's federation.json (the pins-file format),
    each marked when the kit pins it: '= pinned' or '!= pinned <fp>' (refused at start)."""
    from securefed.deploy.settings import load_federation

    d = Path(kit_dir)
    fed = load_federation(d / "federation.json")
    pins = load_pins(d / PINS) if (d / PINS).exists() else {}
    width = max(len(p) for p in fed.party_ids)
    out = []
    for pid, fp in fingerprints(fed).items():
        mark = ""
        if pid in pins:
            entry = next(p for p in fed.parties if p.id == pid)
            mark = "  # = pinned" if entry.key_sha256.startswith(pins[pid]) else f"  # != pinned {short_fingerprint(pins[pid])}"
        elif pins:
            mark = "  # not pinned"
        out.append(f"{pid:<{width}}  {fp}{mark}")
    return out + [_selection_line(fed), _seed_line(fed)]


def _selection_line(fed: FederationConfig) -> str:
    """Who a round invites and by which rule (sha256-rank: the same set on any machine)."""
    s = sampling_of(fed)
    n = len(fed.parties)
    if s.per_round(n) == n:
        return f"# selection: all {n} every round"  # no draw, so no rule
    how = f"{s.per_round(n)} of {n} a round"
    if s.rule == "numpy-choice":
        return (f"# selection: {how}, numpy-choice (federation.json from before rules had names: every "
                "party must run the same numpy; re-provision for sha256-rank)")
    return f"# selection: {how}, {s.rule}"


def _seed_line(fed: FederationConfig) -> str:
    """How the membership seed was made: commit-then-reveal by every member, or digest only."""
    if not any(p.seed_commit for p in fed.parties):
        return "# seed: no commitments (provisioned before commit-then-reveal: the selection seed is grindable)"
    bad = [p.id for p in fed.parties if not _opens(p)]
    if bad:
        return f"# seed: no reveal that opens its commitment from {', '.join(bad)} (a kit refuses this roster)"
    return "# seed: every member committed, then revealed a contribution that opens its commitment"
