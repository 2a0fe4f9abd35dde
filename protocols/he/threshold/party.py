"""Party side of threshold `he` (key-homomorphic: threshold/scheme.py). Three stages:

- he/input: the server's nonce names tau = (key, federation, round, attempt, nonce); the party
  derives a_tau itself and uploads c0 = a_tau*s_i + e_i + Delta*m_i, once per tau (ledger), and one
  m_i per round (ledger: SHA-256 of the input and its dither seed, pinned by the first upload; a
  retry re-encodes the same input to the same integers, a different one is refused);
- he/sign: it signs (key, federation, round, C) for one contributor set C per round (ledger):
  C sorted, within the round's parties, at least max(min_contributors, t, ctx.min_contributors)
  of them (layout.contributors_floor);
- he/decrypt: it answers a_tau * lambda_j^D * sum_{i in C} share_j(s_i) + flooding + its zero
  share over D, only when: it signed exactly this C this round, a quorum of distinct round parties
  signed it (layout.quorum: then no other C of this round can be decrypted), D holds it, has >= t
  members, all of them signers, and it has answered fewer than scheme.answers_per_round times this
  round (counted on disk before the answer leaves).

No element that anyone else chose meets key material: the server chooses C, D and the nonce,
never a ring element. Anything else raises ProtocolError (the one opaque error).

Randomness: each stage's bulk draws (encryption noise, flooding) come from an AES-256-CTR stream
keyed with 32 bytes of the caller's rng (os.urandom by default), as secagg's dither does; the dither
comes from the round's pinned seed (32 bytes of the rng at the round's first upload).
"""

from __future__ import annotations

import hashlib
import os
import struct

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from securefed.protocols.base import Message, PartyInput, ProtocolError, RoundContext
from securefed.protocols.he import framing, rlwe
from securefed.protocols.he.config import HEConfig
from securefed.protocols.he.ring import ByteSource
from securefed.protocols.he.threshold import layout as tl
from securefed.protocols.he.threshold import scheme
from securefed.protocols.he.threshold.keys import ThresholdPartyMaterial
from securefed.protocols.he.threshold.ledger import ThresholdLedger
from securefed.protocols.secagg.primitives import prg_reader
from securefed.protocols.wire import pack_vector

INPUT_STAGE, SIGN_STAGE, DECRYPT_STAGE = "he/input", "he/sign", "he/decrypt"


class ThresholdParty:
    def __init__(self, ctx: RoundContext, party_id: str, data: PartyInput, material: ThresholdPartyMaterial,
                 config: HEConfig, rng: ByteSource = os.urandom, ledger: ThresholdLedger | None = None) -> None:
        if party_id not in ctx.party_ids or party_id != material.party_id:
            raise ValueError(f"party {party_id!r} is not selected for this round or holds another key")
        data.validate(ctx)
        if data.control_delta is not None and not np.all(np.isfinite(data.control_delta)):
            raise ValueError("control_delta has non-finite values")
        self.ctx, self.party_id, self.data, self.config, self.rng = ctx, party_id, data, config, rng
        self.material, self.public = material, material.public
        self.layout = tl.TLayout.for_round(ctx, config, self.public)
        self.ledger = ledger if ledger is not None else ThresholdLedger()
        self.ledger.begin(ctx.round)
        self._seed: bytes | None = None  # tau of this session, once the nonce arrived

    def handle(self, message: Message) -> Message | None:
        stage = {INPUT_STAGE: self._input, SIGN_STAGE: self._sign, DECRYPT_STAGE: self._decrypt}.get(message.stage)
        if stage is None:
            raise ProtocolError("unexpected stage")
        return stage(message)

    def _reader(self, message: Message, kind: int) -> framing.Reader:
        return framing.Reader(message.payload, kind, self.public.key_id, self.ctx.round)

    def _input(self, message: Message) -> Message:
        if self._seed is not None:
            raise ProtocolError("unexpected message")
        r = self._reader(message, tl.KIND_TINPUT)
        nonce = bytes(r.take(tl.NONCE_LEN))
        r.end()
        seed = scheme.round_seed(self.public.key_id, self.ctx.federation_id, self.ctx.round, self.ctx.attempt, nonce)
        lay, ring = self.layout, self.layout.ring
        # One input per round, on disk before anything leaves: a retry (new attempt, new a_tau) with a
        # different input would let the server subtract two decryptions of C (threat-model.md).
        dither = self.ledger.pin_input(self.ctx.round, input_digest(self.data), self.rng(32))
        bulk = prg_reader(self.rng(32))  # e
        ints = lay.codec.encode(self.data.delta, self.data.control_delta, self.data.weight,
                                prg_reader(dither))  # Z_2^b, the same integers in every attempt
        n_ct, msg_of = rlwe.message_of(ring, ints, lay.codec.bits, lay.k, lay.budget.delta_bits)
        parts = [b""] * n_ct

        def emit(c: int, x: np.ndarray) -> None:  # on worker threads, disjoint slots
            parts[c] = lay.pack(x)

        self.ledger.claim_encryption(self.ctx.round, seed)  # on disk before anything under a_tau leaves
        self._seed = seed
        scheme.encrypt_each(ring, self.material.s_ntt, seed, n_ct, msg_of, bulk, emit)
        head = framing.header(tl.KIND_UPLOAD, self.public.key_id, self.ctx.round)
        return Message(INPUT_STAGE, b"".join([head, *parts]))

    def _contributors(self, r: framing.Reader) -> tuple[str, ...]:
        ids = framing.read_ids(r)
        tl.check_ids(ids, self.ctx.party_ids)
        if len(ids) < tl.contributors_floor(self.config, self.public.threshold, self.ctx.min_contributors):
            raise ProtocolError("unexpected message")
        return ids

    def _sign(self, message: Message) -> Message:
        if self._seed is None:
            raise ProtocolError("unexpected message")
        r = self._reader(message, tl.KIND_SIGN)
        ids = self._contributors(r)
        r.end()
        statement = tl.sign_statement(self.public, self.ctx.federation_id, self.ctx.round, ids)
        self.ledger.claim_signature(self.ctx.round, tl.set_hash(statement))  # one C per round
        sig = Ed25519PrivateKey.from_private_bytes(self.material.sign_key).sign(statement)
        return Message(SIGN_STAGE, framing.header(tl.KIND_SIGNED, self.public.key_id, self.ctx.round) + sig)

    def _decrypt(self, message: Message) -> Message:
        if self._seed is None:
            raise ProtocolError("unexpected message")
        pub, ring = self.public, self.layout.ring
        r = self._reader(message, tl.KIND_TDECRYPT)
        ids = self._contributors(r)
        signers = framing.read_ids(r)
        tl.check_ids(signers, self.ctx.party_ids)
        statement = tl.sign_statement(pub, self.ctx.federation_id, self.ctx.round, ids)
        for pid in signers:
            try:
                Ed25519PublicKey.from_public_bytes(pub.sign_pub(pid)).verify(bytes(r.take(tl.SIG_LEN)), statement)
            except (InvalidSignature, ValueError):
                raise ProtocolError("bad signature") from None
        decryptors = framing.read_ids(r)
        r.end()
        tl.check_ids(decryptors, signers)
        if (len(signers) < tl.quorum(len(pub.roster), pub.threshold) or self.party_id not in decryptors
                or len(decryptors) < pub.threshold):
            raise ProtocolError("unexpected message")
        self.ledger.claim_answer(self.ctx.round, tl.set_hash(statement), scheme.answers_per_round(len(pub.roster)))
        w = scheme.combined_share(ring, [self.material.shares[p] for p in ids], pub.point(self.party_id),
                                  tuple(pub.point(p) for p in decryptors))
        masks = [(self.party_id < p, tl.mask_key(self.material.pair_keys[p], self._seed, statement, decryptors))
                 for p in decryptors if p != self.party_id]
        lay, parts = self.layout, [b""] * self.layout.n_ct

        def emit(c: int, y: np.ndarray) -> None:
            parts[c] = lay.pack(y)

        flood = prg_reader(self.rng(32))  # 12 bytes per coefficient
        scheme.answer_each(ring, self._seed, lay.n_ct, w, lay.budget.flood_bits, flood, masks, emit)
        return Message(DECRYPT_STAGE, b"".join([framing.header(tl.KIND_ANSWER, pub.key_id, self.ctx.round), *parts]))


def input_digest(data: PartyInput) -> bytes:
    """SHA-256 of exactly what the party encodes: delta, control (or none) and weight."""
    h = hashlib.sha256(b"securefed-he-threshold-input-v1")
    for v in (data.delta, data.control_delta):
        h.update(b"\x00" if v is None else b"\x01" + pack_vector(v, "<f8"))
    h.update(struct.pack("<d", float(data.weight)))
    return h.digest()
