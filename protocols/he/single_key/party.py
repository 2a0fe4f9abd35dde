"""Party side of single-key `he`: encrypt the update and sign the upload (stage he/input); if this
party is the round's one decryptor (roster[round % n], the same for every party: one decryption
per round in the whole federation), check that what it is given is the contributors' signed uploads
of this round, its own included, sum them itself, decrypt, and return only rounded integer sums
(stage he/decrypt). No OK/CORRUPT answer: a checked sum of signed uploads is always answered."""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import tenseal.sealapi as seal
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from securefed.protocols.base import Message, PartyInput, ProtocolError, RoundContext
from securefed.protocols.he import framing
from securefed.protocols.he.config import HEConfig
from securefed.protocols.he.single_key.context import Cipher, HEPartyMaterial, HEPublic, capacity_bits, load_ciphertext
from securefed.protocols.he.single_key.packing import Layout, Quantizer
from securefed.protocols.he.sealio import check_blob
from securefed.protocols.secagg.ledger import RoundLedger

INPUT_STAGE = "he/input"
DECRYPT_STAGE = "he/decrypt"


class HEParty:
    def __init__(self, ctx: RoundContext, party_id: str, data: PartyInput, material: HEPartyMaterial,
                 config: HEConfig, ledger: RoundLedger | None = None) -> None:
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
        self._own_digest = b""
        self.ledger = ledger or RoundLedger()
        self.ledger.begin(ctx.round)

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
        self._own_digest = hashlib.sha256(out).digest()
        sig = Ed25519PrivateKey.from_private_bytes(self._material.sign_key).sign(
            upload_transcript(self.public.key_id, self.ctx, self.party_id, self._own_digest))
        return Message(INPUT_STAGE, bytes(out) + sig)

    def _decrypt(self, message: Message) -> Message:
        if self._decrypted or not self._sent_input or self.public.decryptor(self.ctx.round) != self.party_id:
            raise ProtocolError("unexpected message")  # one decryptor per round, for the whole federation
        self._decrypted = True
        r = framing.Reader(message.payload, framing.KIND_DECRYPT, self.public.key_id, self.ctx.round)
        contributors = framing.read_ids(r)
        if (
            tuple(sorted(set(contributors))) != contributors
            or not set(contributors) <= set(self.ctx.party_ids) & set(self.public.roster)
            or self.party_id not in contributors
            or len(contributors) < self.config.min_contributors
        ):
            raise ProtocolError("unexpected message")
        evaluator = seal.Evaluator(self.public.context)
        total = None
        for pid in contributors:
            upload = bytes(r.take(r.u32()))
            cts = read_signed_upload(self.public, self.ctx, pid, upload, self.layout.n_ct)
            if pid == self.party_id and hashlib.sha256(upload[: -SIG_LEN]).digest() != self._own_digest:
                raise ProtocolError("unexpected message")  # our upload, replaced
            if total is None:
                total = cts
            else:
                for acc, ct in zip(total, cts):
                    evaluator.add_inplace(acc, ct)
        r.end()
        self.ledger.claim_unmask(self.ctx.round)  # on disk before anything decrypted leaves
        cipher = self._cipher()
        limit = 2 ** (capacity_bits(self.public.params) - 1) - 1
        sums = np.empty(self.layout.n_ct * self.public.slots, dtype=np.int64)
        for i, ct in enumerate(total):
            # Only rounded integers leave this party: CKKS's raw output carries the noise, and with
            # it the secret key (Li-Micciancio 2021). The sum is of signed uploads, so it is answered
            # whatever its noise: no OK/CORRUPT bit for the server to learn from.
            exact = np.clip(np.rint(cipher.decrypt(ct)), -limit, limit)
            sums[i * self.public.slots : (i + 1) * self.public.slots] = exact.astype(np.int64)
        payload = framing.encode_result(self.public.key_id, self.ctx.round, framing.STATUS_OK, sums)
        return Message(DECRYPT_STAGE, payload)


SIG_LEN = 64


def upload_transcript(key_id: bytes, ctx: RoundContext, pid: str, digest: bytes) -> bytes:
    return b"|".join([b"securefed-he-upload-v1", key_id, ctx.federation_id.encode(),
                      struct.pack("<QQ", ctx.round, ctx.attempt), pid.encode(), digest])


def read_signed_upload(public: HEPublic, ctx: RoundContext, pid: str, upload: bytes, n_ct: int) -> list:
    """A party's signed he/input payload -> its ciphertexts; ProtocolError unless it parses, is
    signed by `pid` for this key, federation, round and attempt, and every blob loads."""
    body, sig = upload[:-SIG_LEN], upload[-SIG_LEN:]
    if len(upload) <= SIG_LEN or pid not in public.roster:
        raise ProtocolError("malformed message")
    try:
        Ed25519PublicKey.from_public_bytes(public.sign_pub(pid)).verify(
            sig, upload_transcript(public.key_id, ctx, pid, hashlib.sha256(body).digest()))
    except (InvalidSignature, ValueError):
        raise ProtocolError("bad signature") from None
    r = framing.Reader(body, framing.KIND_INPUT, public.key_id, ctx.round)
    blobs = r.ciphertexts(n_ct, public.max_ct_bytes)
    r.end()
    out = []
    for blob in blobs:
        check_blob(blob, public.max_ct_bytes)
        try:
            out.append(load_ciphertext(public, blob))
        except Exception:  # SEAL's own validation
            raise ProtocolError("malformed message") from None
    return out
