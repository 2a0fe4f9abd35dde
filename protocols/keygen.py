"""Keys generated where they are used: the protocol side of `securefed keygen` / `provision`.

A protocol that implements the hooks below never has a party's secret leave that party:

    party_keygen(party_id) -> (secret, public)                    # party's machine, phase 1
    party_keygen_finish(party_id, secret, roster) -> (secret, public2 | None)
                                                                  # party's machine, optional phase 2:
                                                                  # roster = {pid: phase-1 public}
    assemble(roster, finish) -> (server_material, {pid: party_public})
                                                                  # operator: public bytes only
    party_material(party_id, secret, party_public) -> material    # party's machine: what party() takes

secret, public, public2 and party_public are bytes; the protocol defines their layout. Phase 2 lets
a protocol deal something to peers once everyone's phase-1 keys are pinned (e.g. threshold HE:
each party encrypts Shamir shares of its key share to the others' phase-1 keys, and the operator
only relays the ciphertexts). `finish` is {pid: public2} for the parties that returned one.

`keygen_for(protocol)` gives these hooks for any protocol: the protocol's own, or for a protocol
that only has `provision` the *dealer* adapter, which runs provision on the operator's machine (so
the operator holds the parties' material; `Keygen.dealer` says so, and provisioning warns).
`provision_by_keygen` is the in-process equivalent (simulation): every step, in one process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from securefed.errors import MaterialError


@dataclass(frozen=True)
class Keygen:
    party_keygen: Callable[[str], tuple[bytes, bytes]]
    party_keygen_finish: Callable[[str, bytes, Mapping[str, bytes]], tuple[bytes, bytes | None]]
    assemble: Callable[[Mapping[str, bytes], Mapping[str, bytes]], tuple[Any, dict[str, bytes]]]
    party_material: Callable[[str, bytes, bytes], Any]
    two_phase: bool  # phase 2 does something: provisioning must run it before assemble
    dealer: bool  # the operator makes the parties' material (no keygen hooks on this protocol)


def _no_finish(party_id: str, secret: bytes, roster: Mapping[str, bytes]) -> tuple[bytes, bytes | None]:
    return secret, None


def keygen_for(protocol: Any) -> Keygen:
    if all(hasattr(protocol, h) for h in ("party_keygen", "assemble", "party_material")):
        finish = getattr(protocol, "party_keygen_finish", None)
        return Keygen(protocol.party_keygen, finish or _no_finish, protocol.assemble, protocol.party_material,
                      two_phase=finish is not None, dealer=False)
    return _dealer(protocol)


def _dealer(protocol: Any) -> Keygen:
    """Adapter for a protocol with `provision` only: phase 1 carries nothing, the operator calls
    provision and hands each party its material as 'public' bytes (its dump_material bytes; b""
    for None material, as plain has)."""

    def dump(material: Any) -> bytes:
        if material is None:
            return b""
        if not hasattr(protocol, "dump_material"):
            raise MaterialError(
                f"protocol {protocol.name!r} provisions key material but has no dump_material/load_material")
        return protocol.dump_material(material)

    def assemble(roster: Mapping[str, bytes], finish: Mapping[str, bytes]) -> tuple[Any, dict[str, bytes]]:
        server, parties = protocol.provision(tuple(sorted(roster)))
        if set(parties) != set(roster):
            raise MaterialError(f"protocol {protocol.name!r} provisioned material for other parties than asked")
        return server, {pid: dump(m) for pid, m in parties.items()}

    def party_material(pid: str, secret: bytes, public: bytes) -> Any:
        return protocol.load_material(public) if public else None

    return Keygen(lambda pid: (b"", b""), _no_finish, assemble, party_material, two_phase=False, dealer=True)


def provision_by_keygen(protocol: Any, party_ids: tuple[str, ...]) -> tuple[Any, dict[str, Any]]:
    """Every keygen step in one process, as a federation would run them across machines."""
    kg = keygen_for(protocol)
    secrets: dict[str, bytes] = {}
    roster: dict[str, bytes] = {}
    for pid in party_ids:
        secrets[pid], roster[pid] = kg.party_keygen(pid)
    finish: dict[str, bytes] = {}
    for pid in party_ids:
        secrets[pid], public2 = kg.party_keygen_finish(pid, secrets[pid], roster)
        if public2 is not None:
            finish[pid] = public2
    server, public = kg.assemble(roster, finish)
    return server, {pid: kg.party_material(pid, secrets[pid], public[pid]) for pid in party_ids}
