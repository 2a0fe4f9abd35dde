"""`he`: CKKS homomorphic encryption (TenSEAL's SEAL binding). Parties share a secret key and
encrypt their fixed-point, slot-packed updates; the server, holding no key, adds ciphertexts; one
(or every) surviving contributor decrypts the sum and returns only its integer sums.

    protocol = registry.create("he", HEConfig(...))        # or None: defaults
    server_material, party_material = protocol.provision(party_ids)
    kits.write_server_kit(server_material, ".../server.hekit")   # no key at all
    kits.write_party_kit(party_material[pid], ".../party.hekit")  # shared secret key, mode 0600

Modules: config (HEConfig), context (parameters, keys, provisioning, error bound), packing
(fixed point and digit packing), framing (message bytes), party, server, kits (files), sealio.
"""

from __future__ import annotations

from typing import Any

from securefed.protocols.base import PartyInput, RoundContext
from securefed.protocols.he.config import HEConfig
from securefed.protocols.he.context import HEPartyMaterial, HEPublic, provision
from securefed.protocols.he import tkits
from securefed.protocols.he.kits import MaterialError, dump_material, load_material
from securefed.protocols.he.party import DECRYPT_STAGE, INPUT_STAGE, HEParty
from securefed.protocols.he.server import HEServer
from securefed.protocols.he.tkeys import ThresholdPartyMaterial, ThresholdPublic
from securefed.protocols.he.tkeys import provision as provision_threshold
from securefed.protocols.he.tparty import ThresholdParty
from securefed.protocols.he.tserver import ThresholdServer
from securefed.protocols.registry import register

__all__ = ["HE", "HEConfig", "HEParty", "HEPartyMaterial", "HEPublic", "HEServer", "INPUT_STAGE",
           "DECRYPT_STAGE", "MaterialError"]


class HE:
    name = "he"

    def __init__(self, config: HEConfig | None = None) -> None:
        if config is not None and not isinstance(config, HEConfig):
            config = HEConfig.model_validate(config)  # e.g. a dict section from a YAML config
        self.config = config or HEConfig()

    def provision(self, party_ids: tuple[str, ...]):
        """threshold: the parties' keygen run in process (tkeys.provision); single_key: one SEAL key."""
        if self.config.mode == "threshold":
            return provision_threshold(tuple(party_ids), self.config.threshold_fraction)
        return provision(self.config, tuple(party_ids))

    def dump_material(self, material: HEPublic | HEPartyMaterial) -> bytes:
        """Server material (no key) or party material (the shared secret key: store it 0600) as
        versioned, role-tagged kit bytes (MaterialCodec hook for the deploy layer; see kits.py)."""
        if isinstance(material, (ThresholdPublic, ThresholdPartyMaterial)):
            return tkits.dump(material)
        return dump_material(material)

    def load_material(self, data: bytes) -> HEPublic | HEPartyMaterial:
        """Inverse of dump_material; raises MaterialError (ConfigError and ValueError) if malformed."""
        if bytes(data[: len(tkits.MAGIC)]) == tkits.MAGIC:
            return tkits.load(data)
        return load_material(data)

    def party(self, ctx: RoundContext, party_id: str, data: PartyInput, material: Any) -> HEParty | ThresholdParty:
        if isinstance(material, ThresholdPartyMaterial):
            return ThresholdParty(ctx, party_id, data, material, self.config)
        return HEParty(ctx, party_id, data, material, self.config)

    def server(self, ctx: RoundContext, material: Any) -> HEServer | ThresholdServer:
        if isinstance(material, ThresholdPublic):
            return ThresholdServer(ctx, material, self.config)
        return HEServer(ctx, material, self.config)


register("he", HE)
