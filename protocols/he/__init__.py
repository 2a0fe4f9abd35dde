"""`he`: homomorphic aggregation. Parties encrypt their fixed-point updates, the server (holding
no key) adds ciphertexts, and parties decrypt only a sum they have checked.

mode "threshold" (default): key-homomorphic RLWE on our own ring layer (threshold/scheme.py).
Every party generates its own key s_i on its machine and deals Shamir shares of it t-of-n (keygen
hooks below, protocols/keygen.py); it uploads c0 = a_tau*s_i + e_i + Delta*m_i under public
randomness a_tau it derives itself; t decryptors answer a_tau * (their share of sum_{i in C} s_i)
plus flooding for a contributor set C that a quorum signed. Modules: ring (hazmat RNS arithmetic),
rlwe (noise sampling, packing, decoding, Shamir); the design itself in threshold/ (scheme, keys:
keygen, kits: material bytes, layout: messages, ledger, party, server).

mode "single_key": the original shared-key CKKS scheme on SEAL (single_key/: context, packing,
party, server, kits; framing and sealio here), kept as an explicit option; see docs/threat-model.md.

    protocol = registry.create("he", HEConfig(...))        # or None: defaults (threshold)
    server_material, party_material = protocol.provision(party_ids)   # in process (simulation)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from securefed.protocols.base import PartyInput, RoundContext
from securefed.protocols.he.threshold import keys as tkeys
from securefed.protocols.he.threshold import kits as tkits
from securefed.protocols.he.config import HEConfig
from securefed.protocols.he.single_key.context import HEPartyMaterial, HEPublic, provision
from securefed.protocols.he.single_key.kits import MaterialError, dump_material, load_material
from securefed.protocols.he.single_key.party import DECRYPT_STAGE, INPUT_STAGE, HEParty
from securefed.protocols.he.single_key.server import HEServer
from securefed.protocols.he.threshold.keys import ThresholdPartyMaterial, ThresholdPublic
from securefed.protocols.he.threshold.ledger import ThresholdLedger
from securefed.protocols.he.threshold.party import ThresholdParty
from securefed.protocols.he.threshold.server import ThresholdServer
from securefed.protocols.keygen import provision_by_keygen
from securefed.protocols.registry import register
from securefed.protocols.secagg.ledger import RoundLedger

__all__ = ["HE", "HEConfig", "HEParty", "HEPartyMaterial", "HEPublic", "HEServer", "INPUT_STAGE",
           "DECRYPT_STAGE", "MaterialError", "ThresholdParty", "ThresholdServer"]


class HE:
    name = "he"

    def __init__(self, config: HEConfig | None = None, rng=os.urandom) -> None:
        if config is not None and not isinstance(config, HEConfig):
            config = HEConfig.model_validate(config)  # e.g. a dict section from a YAML config
        self.config = config or HEConfig()
        self._rng = rng
        # party id -> its round ledger (what it may still do this round, across attempts). In memory
        # by default; a deployed party binds its on-disk one with bind_party_state.
        self._ledgers: dict[str, RoundLedger | ThresholdLedger] = {}
        # threshold: decryptors whose exclusion made a round decode, worst first; asked last.
        self.suspects: list[str] = []
        # threshold: round -> the contributor set an attempt put up for signature (a retry reuses it).
        self.proposed: dict[int, tuple[str, ...]] = {}
        if self.config.mode == "threshold":
            # The keygen hooks exist only in threshold mode: protocols.keygen detects them by name,
            # and single-key mode keeps the dealer adapter (the operator makes the shared key).
            self.party_keygen = self._party_keygen
            self.party_keygen_finish = self._party_keygen_finish
            self.assemble = self._assemble
            self.party_material = self._party_material

    def check_round_size(self, roster: int, per_round: int) -> None:
        """Config time: raise ValueError (one line, why) when rounds of `per_round` parties from a
        roster of `roster` key holders could never finish (decryptors would answer, or parties spend
        their round, for nothing)."""
        check_round_size(self.config, roster, per_round)

    def provision(self, party_ids: tuple[str, ...]):
        """threshold: every party's keygen step, in process (protocols.keygen.provision_by_keygen);
        single_key: one SEAL key for everyone, made here."""
        if self.config.mode == "threshold":
            return provision_by_keygen(self, tuple(party_ids))
        return provision(self.config, tuple(party_ids))

    def bind_party_state(self, party_id: str, directory: str | Path, max_rounds: int) -> None:
        """Deployment hook: keep `party_id`'s round ledger in `directory` (it survives restarts)."""
        kind = ThresholdLedger if self.config.mode == "threshold" else RoundLedger
        self._ledgers[party_id] = kind(Path(directory) / f"he-{self.config.mode}-rounds.json", max_rounds)

    # --- threshold keygen hooks (protocols/keygen.py) --------------------------------------------

    def _party_keygen(self, party_id: str) -> tuple[bytes, bytes]:
        secret, public = tkeys.party_keygen(tkeys.DEFAULT_LABEL, party_id, self.config.threshold_fraction, self._rng)
        return tkeys.secret_to_bytes(secret), public

    def _party_keygen_finish(self, party_id: str, secret: bytes, roster: dict[str, bytes]) -> tuple[bytes, bytes]:
        done, public2 = tkeys.party_keygen_finish(tkeys.secret_from_bytes(secret, party_id), dict(roster), self._rng)
        return tkeys.secret_to_bytes(done), public2

    def _assemble(self, roster: dict[str, bytes], finish: dict[str, bytes]) -> tuple[ThresholdPublic, dict[str, bytes]]:
        try:
            return tkeys.assemble(dict(roster), dict(finish))
        except tkeys.KeygenError as e:
            raise MaterialError(str(e)) from None

    def _party_material(self, party_id: str, secret: bytes, public: bytes) -> ThresholdPartyMaterial:
        try:
            return tkeys.party_material(tkeys.secret_from_bytes(secret, party_id), public)
        except tkeys.KeygenError as e:
            raise MaterialError(str(e)) from None

    # --- material bytes (deploy layer's MaterialCodec hook) --------------------------------------

    def dump_material(self, material: Any) -> bytes:
        """Server material (no secret) or party material (its secrets: store it 0600) as
        versioned, role-tagged bytes: threshold.kits or single_key.kits."""
        if isinstance(material, (ThresholdPublic, ThresholdPartyMaterial)):
            return tkits.dump(material)
        return dump_material(material)

    def load_material(self, data: bytes) -> Any:
        """Inverse of dump_material; raises MaterialError (ConfigError and ValueError) if malformed."""
        if bytes(data[: len(tkits.MAGIC)]) in (tkits.MAGIC, tkits.OLD_MAGIC):
            return tkits.load(data)
        return load_material(data)

    def public_roster(self, material: Any) -> dict[str, bytes] | None:
        """threshold: every party's signed phase-1 keys as this material uses them (its signing key,
        the X25519 key its shares were dealt to, the commitment its b_j was checked against); the
        deploy layer checks them against the fingerprints federation.json lists. single_key: None
        (dealer model: the operator made the key, there is nothing of the parties' to check)."""
        if isinstance(material, (ThresholdPublic, ThresholdPartyMaterial)):
            pub = material if isinstance(material, ThresholdPublic) else material.public
            return dict(zip(pub.roster, pub.phase1))
        return None

    def party(self, ctx: RoundContext, party_id: str, data: PartyInput, material: Any) -> HEParty | ThresholdParty:
        if isinstance(material, ThresholdPartyMaterial):
            ledger = self._ledgers.setdefault(party_id, ThresholdLedger())
            return ThresholdParty(ctx, party_id, data, material, self.config, self._rng, ledger)
        return HEParty(ctx, party_id, data, material, self.config, self._ledgers.setdefault(party_id, RoundLedger()))

    def server(self, ctx: RoundContext, material: Any) -> HEServer | ThresholdServer:
        if isinstance(material, ThresholdPublic):
            return ThresholdServer(ctx, material, self.config, self.suspects, proposed=self.proposed)
        return HEServer(ctx, material, self.config)


def check_round_size(config: HEConfig, roster: int, per_round: int) -> None:
    """See HE.check_round_size. threshold: a round needs a quorum q of the roster to sign its
    contributor set and at least max(min_contributors, t) contributors; single_key:
    min_contributors."""
    if config.mode == "single_key":
        if per_round < config.min_contributors:
            raise ValueError(f"he: rounds select {per_round} parties but min_contributors is {config.min_contributors}")
        return
    from securefed.protocols.he.threshold.layout import round_needs

    t, q, need = round_needs(roster, config.threshold_fraction, config)
    if per_round < need:
        raise ValueError(f"he: rounds select {per_round} of {roster} parties but need {need} "
                         f"(t={t} decryptors, a quorum of {q} signing the contributor set, "
                         f"min_contributors={config.min_contributors}): no round could finish; "
                         "select more parties or lower threshold_fraction / min_contributors")


register("he", HE)
