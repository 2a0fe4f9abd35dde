"""Long-lived identity keys, made once per federation: each party makes its own Ed25519 signing key
on its own machine (party_keygen), the operator pins everyone's public keys (assemble), and the
party combines its secret with the pinned table (party_material), checking its own key is in it.
The server gets the public keys only (it can verify, never sign). `provision` runs the same steps
in one process (simulation). `dump_material`/`load_material` turn either kind into
self-describing bytes (layout below)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from securefed.errors import MaterialError
from securefed.protocols.secagg.primitives import KEY_BYTES, Rng, draw, ed25519_private, ed25519_public_bytes


@dataclass(frozen=True)
class ServerMaterial:
    identity_keys: Mapping[str, bytes]  # party id -> Ed25519 public key (32 bytes)


@dataclass(frozen=True)
class PartyMaterial:
    party_id: str
    signing_key: bytes = field(repr=False)  # Ed25519 private key (32 bytes): kept out of logs
    identity_keys: Mapping[str, bytes] = field(repr=False)  # party id -> Ed25519 public key


def party_keygen(rng: Rng) -> tuple[bytes, bytes]:
    """On the party's machine: (Ed25519 private key, its public key), 32 bytes each."""
    sk = draw(rng, KEY_BYTES)
    return sk, ed25519_public_bytes(ed25519_private(sk))


def assemble(roster: Mapping[str, bytes]) -> tuple[ServerMaterial, dict[str, bytes]]:
    """Operator: pin the parties' public keys. Every party receives the same table (the server
    material's bytes). Raises MaterialError for a key that is not a valid Ed25519 public key."""
    table = MappingProxyType({pid: _check_public(pid, pk) for pid, pk in sorted(roster.items())})
    server = ServerMaterial(table)
    blob = dump_material(server)
    return server, {pid: blob for pid in table}


def party_material(party_id: str, secret: bytes, public: bytes) -> PartyMaterial:
    """On the party's machine: its secret and the pinned table -> PartyMaterial. Raises
    MaterialError unless the table pins exactly this party's own key (an operator that
    substituted it would otherwise make the party sign under a key the others do not expect)."""
    table = load_material(public)
    if not isinstance(table, ServerMaterial):
        raise MaterialError("secagg material: expected the pinned identity key table")
    if len(secret) != KEY_BYTES or table.identity_keys.get(party_id) != ed25519_public_bytes(ed25519_private(secret)):
        raise MaterialError(f"secagg material: the pinned identity key of {party_id!r} is not this party's key")
    return PartyMaterial(party_id, secret, table.identity_keys)


def provision(party_ids: tuple[str, ...], rng: Rng) -> tuple[ServerMaterial, dict[str, PartyMaterial]]:
    """The in-process equivalent of keygen on every party + assemble by the operator."""
    if len(set(party_ids)) != len(party_ids):
        raise ValueError("duplicate party ids")
    keys = {pid: party_keygen(rng) for pid in party_ids}
    server, public = assemble({pid: pk for pid, (_, pk) in keys.items()})
    return server, {pid: party_material(pid, keys[pid][0], public[pid]) for pid in party_ids}


# --- serialization (the deploy layer's MaterialCodec hook, see securefed/deploy/material.py) -----
#
#   magic "SFSAGGM" | version u8 (1) | kind u8 (0 server, 1 party) | body
#   server body: table
#   party body:  id | Ed25519 private key (32 raw bytes) | table
#   table:       count u32 | count x (id | Ed25519 public key, 32 bytes), ids sorted, unique
#   id:          len u16 | UTF-8 bytes (non-empty)
#
# No pickle. The server kind has no private-key field at all, so server bytes cannot carry one. The
# kind tag makes every blob say what it is; the caller checks it got the kind it expected.

MAGIC = b"SFSAGGM"
VERSION = 1
KIND_SERVER, KIND_PARTY = 0, 1
_U8, _U16, _U32 = struct.Struct("<B"), struct.Struct("<H"), struct.Struct("<I")


def _enc_id(pid: str) -> bytes:
    if not isinstance(pid, str) or not pid:
        raise ValueError(f"secagg material: party id must be a non-empty string, got {pid!r}")
    raw = pid.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise ValueError("secagg material: party id too long")
    return _U16.pack(len(raw)) + raw


def _check_public(pid: str, pk: bytes) -> bytes:
    if not isinstance(pk, (bytes, bytearray)) or len(pk) != KEY_BYTES:
        raise MaterialError(f"secagg material: identity key of {pid!r} is not a {KEY_BYTES}-byte Ed25519 key")
    try:
        Ed25519PublicKey.from_public_bytes(bytes(pk))
    except ValueError:
        raise MaterialError(f"secagg material: identity key of {pid!r} is not a valid Ed25519 key") from None
    return bytes(pk)


def _enc_table(keys: Mapping[str, bytes]) -> bytes:
    out = [_U32.pack(len(keys))]
    for pid in sorted(keys):
        out += [_enc_id(pid), _check_public(pid, keys[pid])]
    return b"".join(out)


def dump_material(material: ServerMaterial | PartyMaterial) -> bytes:
    if isinstance(material, ServerMaterial):
        return MAGIC + _U8.pack(VERSION) + _U8.pack(KIND_SERVER) + _enc_table(material.identity_keys)
    if isinstance(material, PartyMaterial):
        if not isinstance(material.signing_key, (bytes, bytearray)) or len(material.signing_key) != KEY_BYTES:
            raise ValueError(f"secagg material: signing key of {material.party_id!r} is not {KEY_BYTES} bytes")
        sk = ed25519_private(bytes(material.signing_key))
        raw = sk.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                               serialization.NoEncryption())
        return (MAGIC + _U8.pack(VERSION) + _U8.pack(KIND_PARTY) + _enc_id(material.party_id) + raw
                + _enc_table(material.identity_keys))
    raise TypeError(f"secagg: cannot serialize {type(material).__name__} (expected ServerMaterial or PartyMaterial)")


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise MaterialError("secagg material: truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return _U8.unpack(self.take(1))[0]

    def pid(self) -> str:
        (n,) = _U16.unpack(self.take(2))
        if n == 0:
            raise MaterialError("secagg material: empty party id")
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError:
            raise MaterialError("secagg material: party id is not UTF-8") from None

    def table(self) -> Mapping[str, bytes]:
        (count,) = _U32.unpack(self.take(4))
        # Each entry is at least 2 + 1 + 32 bytes: refuse a count the data cannot hold before looping.
        if count == 0 or count * (3 + KEY_BYTES) > len(self.data) - self.pos:
            raise MaterialError("secagg material: bad identity key count")
        keys: dict[str, bytes] = {}
        prev = None
        for _ in range(count):
            pid = self.pid()
            if prev is not None and pid <= prev:
                raise MaterialError("secagg material: identity keys not sorted or duplicated")
            keys[pid] = _check_public(pid, self.take(KEY_BYTES))
            prev = pid
        return MappingProxyType(keys)

    def end(self) -> None:
        if self.pos != len(self.data):
            raise MaterialError("secagg material: trailing bytes")


def load_material(data: bytes) -> ServerMaterial | PartyMaterial:
    """Inverse of dump_material. Raises MaterialError (a ConfigError and a ValueError) for anything
    that is not exactly a blob dump_material makes."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("secagg material must be bytes")
    r = _Reader(bytes(data))
    if len(r.data) < len(MAGIC) or r.take(len(MAGIC)) != MAGIC:
        raise MaterialError("secagg material: not a secagg material blob (bad magic)")
    version = r.u8()
    if version != VERSION:
        raise MaterialError(f"secagg material: unsupported version {version} (this build reads {VERSION})")
    kind = r.u8()
    if kind == KIND_SERVER:
        keys = r.table()
        r.end()
        return ServerMaterial(keys)
    if kind != KIND_PARTY:
        raise MaterialError(f"secagg material: unknown kind {kind}")
    pid = r.pid()
    raw = r.take(KEY_BYTES)
    keys = r.table()
    r.end()
    sk = ed25519_private(raw)
    if pid not in keys:
        raise MaterialError(f"secagg material: party {pid!r} is missing from its own identity key table")
    if ed25519_public_bytes(sk) != keys[pid]:
        raise MaterialError(f"secagg material: signing key of {pid!r} does not match its identity key")
    return PartyMaterial(pid, raw, keys)
