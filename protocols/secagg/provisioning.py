"""Long-lived identity keys, made once per federation: each party gets its own Ed25519 signing key
and everyone's public keys; the server gets the public keys only (it can verify, never sign)."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from securefed.protocols.secagg.primitives import KEY_BYTES, Rng, draw, ed25519_private, ed25519_public_bytes


@dataclass(frozen=True)
class ServerMaterial:
    identity_keys: Mapping[str, bytes]  # party id -> Ed25519 public key (32 bytes)


@dataclass(frozen=True)
class PartyMaterial:
    party_id: str
    signing_key: bytes = field(repr=False)  # Ed25519 private key (32 bytes): kept out of logs
    identity_keys: Mapping[str, bytes] = field(repr=False)  # party id -> Ed25519 public key


def provision(party_ids: tuple[str, ...], rng: Rng) -> tuple[ServerMaterial, dict[str, PartyMaterial]]:
    if len(set(party_ids)) != len(party_ids):
        raise ValueError("duplicate party ids")
    secrets = {pid: draw(rng, KEY_BYTES) for pid in party_ids}
    public = MappingProxyType({pid: ed25519_public_bytes(ed25519_private(sk)) for pid, sk in secrets.items()})
    return ServerMaterial(public), {pid: PartyMaterial(pid, secrets[pid], public) for pid in party_ids}
