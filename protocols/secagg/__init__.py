"""`secagg`: secure aggregation by pairwise masking (SecAgg, Bonawitz et al. 2017) over a complete
or sparse random neighbour graph (SecAgg+, Bell et al. 2020).

Each party adds to its fixed-point encoded update a self mask PRG(b_i) and, for each neighbour j,
+/- PRG(s_ij) from an X25519 agreement; pairwise masks cancel in the sum, and t-of-k Shamir shares
of b_i (for survivors) or of the pairwise key (for dropouts) let the server remove the rest.
The server learns only the sum over survivors. Stages: advertise keys, share keys, masked input,
consistency check, unmask (see party.py / server.py; framing in frames.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from securefed.protocols.base import PartyInput, RoundContext
from securefed.protocols.registry import register
from securefed.protocols.secagg.config import SecAggConfig
from securefed.protocols.secagg.ledger import RoundLedger
from securefed.protocols.secagg.party import SecAggParty
from securefed.protocols.secagg.primitives import Rng, os_rng
from securefed.protocols.secagg.provisioning import (
    MaterialError,
    PartyMaterial,
    ServerMaterial,
    assemble,
    dump_material,
    load_material,
    party_keygen,
    party_material,
    provision,
)
from securefed.protocols.secagg.server import SecAggServer

__all__ = ["SecAgg", "SecAggConfig", "SecAggParty", "SecAggServer", "PartyMaterial", "ServerMaterial",
           "MaterialError"]


class SecAgg:
    name = "secagg"

    def __init__(self, config: SecAggConfig | dict[str, Any] | None = None, rng: Rng = os_rng) -> None:
        """`rng` is the only source of randomness (keys, seeds, Shamir coefficients, nonces, dither);
        the default is the OS CSPRNG. Tests pass a fixed stream to make rounds reproducible."""
        if config is None:
            config = SecAggConfig()
        elif isinstance(config, dict):
            config = SecAggConfig.model_validate(config)
        elif not isinstance(config, SecAggConfig):
            raise TypeError(f"secagg config must be a SecAggConfig, a dict or None, not {type(config).__name__}")
        self.config = config
        self._rng = rng
        # party id -> its round ledger. In memory by default (one simulated federation per protocol
        # object); a deployed party binds its on-disk one with bind_party_state.
        self._ledgers: dict[str, RoundLedger] = {}

    def bind_party_state(self, party_id: str, directory: str | Path, max_rounds: int) -> None:
        """Deployment hook: keep `party_id`'s round ledger in `directory` (it survives restarts)."""
        self._ledgers[party_id] = RoundLedger(Path(directory) / "secagg-rounds.json", max_rounds)

    def provision(self, party_ids: tuple[str, ...]) -> tuple[ServerMaterial, dict[str, PartyMaterial]]:
        return provision(tuple(party_ids), self._rng)

    # --- keys generated where they are used (protocols/keygen.py) ---------------------------------

    def party_keygen(self, party_id: str) -> tuple[bytes, bytes]:
        """On the party's machine: (Ed25519 secret, public key)."""
        return party_keygen(self._rng)

    def assemble(self, roster: dict[str, bytes], finish: dict[str, bytes]) -> tuple[ServerMaterial, dict[str, bytes]]:
        """Operator: pin the public keys; no phase 2, so `finish` is empty."""
        return assemble(roster)

    def party_material(self, party_id: str, secret: bytes, public: bytes) -> PartyMaterial:
        return party_material(party_id, secret, public)

    def dump_material(self, material: ServerMaterial | PartyMaterial) -> bytes:
        """Server or party material as versioned, kind-tagged bytes (MaterialCodec hook for the
        deploy layer). Party bytes hold that party's Ed25519 private key: store them 0600."""
        return dump_material(material)

    def load_material(self, data: bytes) -> ServerMaterial | PartyMaterial:
        """Inverse of dump_material; raises MaterialError (ConfigError and ValueError) if malformed."""
        return load_material(data)

    def public_roster(self, material: ServerMaterial | PartyMaterial) -> dict[str, bytes]:
        """Every party's phase-1 public key as this material pins it (the deploy layer checks them
        against the fingerprints federation.json lists, and so against pinned fingerprints)."""
        return dict(material.identity_keys)

    def party(self, ctx: RoundContext, party_id: str, data: PartyInput, material: Any) -> SecAggParty:
        ledger = self._ledgers.setdefault(party_id, RoundLedger())
        return SecAggParty(ctx, party_id, data, material, self.config, self._rng, ledger)

    def server(self, ctx: RoundContext, material: Any) -> SecAggServer:
        return SecAggServer(ctx, material, self.config)


register("secagg", SecAgg)
