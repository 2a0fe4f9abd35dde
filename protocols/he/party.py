"""Party side of `he`: encrypt the update (stage he/input); if designated, decrypt the encrypted sum
and return only its rounded integer sums (stage he/decrypt)."""

from __future__ import annotations

import struct

import numpy as np

from securefed.protocols.base import Message, PartyInput, ProtocolError, RoundContext
from securefed.protocols.he import framing
from securefed.protocols.he.config import HEConfig
from securefed.protocols.he.context import Cipher, HEPartyMaterial, capacity_bits, load_ciphertext
from securefed.protocols.he.packing import Layout, Quantizer
from securefed.protocols.he.sealio import check_blob

INPUT_STAGE = "he/input"
DECRYPT_STAGE = "he/decrypt"


class HEParty:
    def __init__(self, ctx: RoundContext, party_id: str, data: PartyInput, material: HEPartyMaterial,
                 config: HEConfig) -> None:
        if not isinstance(material, HEPartyMaterial):
            raise TypeError("he party material must be an HEPartyMaterial (from provision)")
        if party_id not in ctx.party_ids:
            raise ValueError(f"party {party_id!r} is not selected for this round")
        data.validate(ctx)
        if data.control_delta is not None and not np.all(np.isfinite(data.control_delta)):
            raise ValueError("control_delta has non-finite values")
        self.ctx, self.party_id, self.data, self.config = ctx, party_id, data, config
        self.public = material.public
        self.layout = Layout.for_round(ctx, config, self.public)
        self._material = material
        self._sent_input = False
        self._decrypted = False

    def handle(self, message: Message) -> Message | None:
        if message.stage == INPUT_STAGE:
            return self._input(message)
        if message.stage == DECRYPT_STAGE:
            return self._decrypt(message)
        raise ProtocolError("unexpected stage")

    def _cipher(self) -> Cipher:
        return Cipher(self.public, self._material.secret_key)

    def _input(self, message: Message) -> Message:
        if self._sent_input or message.payload:
            raise ProtocolError("unexpected message")
        self._sent_input = True
        lay, cipher, quant = self.layout, self._cipher(), Quantizer(self.layout, self.data)
        # Stream: one ciphertext's slots are quantized, packed, encrypted and appended at a time.
        out = bytearray(framing.header(framing.KIND_INPUT, self.public.key_id, self.ctx.round))
        out += struct.pack("<I", lay.n_ct)
        for i in range(lay.n_ct):
            blob = cipher.encrypt(quant.slot_values(i))
            out += struct.pack("<I", len(blob))
            out += blob
        return Message(INPUT_STAGE, bytes(out))

    def _decrypt(self, message: Message) -> Message:
        # One decryption per round: a server asking twice (e.g. for one party's ciphertext after the
        # sum) is refused. The server is honest-but-curious in our threat model; this is a tripwire.
        if self._decrypted or not self._sent_input:
            raise ProtocolError("unexpected message")
        self._decrypted = True
        r = framing.Reader(message.payload, framing.KIND_DECRYPT, self.public.key_id, self.ctx.round)
        contributors = framing.read_ids(r)
        if (
            len(set(contributors)) != len(contributors)
            or not set(contributors) <= set(self.ctx.party_ids)
            or self.party_id not in contributors
            or len(contributors) < self.config.min_contributors
        ):
            raise ProtocolError("unexpected message")
        blobs = r.ciphertexts(self.layout.n_ct, self.public.max_ct_bytes)
        r.end()
        cipher = self._cipher()
        limit = 2.0 ** (capacity_bits(self.public.params) - 1)
        sums = np.empty(self.layout.n_ct * self.public.slots, dtype=np.int64)
        corrupt = False
        for i, blob in enumerate(blobs):
            check_blob(blob, self.public.max_ct_bytes)
            try:
                ct = load_ciphertext(self.public, blob)
            except Exception:
                raise ProtocolError("malformed message") from None
            approx = cipher.decrypt(ct)
            exact = np.rint(approx)
            # Only the rounded integers leave this party. Returning CKKS's raw approximate output
            # would hand the server (which holds the ciphertext) the noise, and with it the secret
            # key (Li-Micciancio 2021). A sum whose noise exceeds the validated bound, or outside
            # the slot capacity, did not come from n honest encryptions under our key.
            if np.max(np.abs(approx - exact)) > self.config.max_decrypt_error or np.max(np.abs(exact)) >= limit:
                corrupt = True
                break
            sums[i * self.public.slots : (i + 1) * self.public.slots] = exact.astype(np.int64)
        status = framing.STATUS_CORRUPT if corrupt else framing.STATUS_OK
        payload = framing.encode_result(self.public.key_id, self.ctx.round, status, None if corrupt else sums)
        return Message(DECRYPT_STAGE, payload)
