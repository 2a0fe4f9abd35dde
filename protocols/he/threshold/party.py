"""Party side of threshold `he`: encrypt under the collective key (stage he/input), attest the
linear hash of its own upload for the sum the server announces (he/attest), and produce at most
one partial decryption (he/decrypt) and one recovery share (he/recover) per round, each only for
a c1 sum it has checked:

- the contributor list holds this party, only parties of the round, at least min_contributors;
- every contributor signed an attestation of this exact (key, federation, round, contributor
  list, SHA-256 of the c1 sum), and the attested hashes add up to the hash of the c1 sum under a
  challenge derived from that transcript (so the c1 sum is the sum of the contributors' own
  uploads of this round, this party's fresh one included, with probability > 1 - 2^-120);
- the recovery request names a decryption set A that holds this party, has >= t members, is
  within the contributors, and whose complement in the roster is exactly the missing set D.

Anything else raises ProtocolError (the one opaque error). Only flooded partial decryptions of a
checked sum leave the party; never a plaintext, never an OK/CORRUPT bit.

Randomness: each stage's bulk draws (dither, encryption noise, flooding) come from an AES-256-CTR
stream keyed with 32 bytes of the caller's rng (os.urandom by default), as secagg's dither does:
the kernel's CSPRNG delivered ~200 MB/s here, a tenth of an encryption's time.
"""

from __future__ import annotations

import os

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from securefed.protocols.base import Message, PartyInput, ProtocolError, RoundContext
from securefed.protocols.he import framing, rlwe
from securefed.protocols.he.threshold import layout as tr
from securefed.protocols.he.config import HEConfig
from securefed.protocols.he.ring import ByteSource
from securefed.protocols.he.threshold.keys import ThresholdPartyMaterial
from securefed.protocols.secagg.ledger import RoundLedger
from securefed.protocols.secagg.primitives import prg_reader

INPUT_STAGE, ATTEST_STAGE, DECRYPT_STAGE, RECOVER_STAGE = "he/input", "he/attest", "he/decrypt", "he/recover"


class ThresholdParty:
    def __init__(self, ctx: RoundContext, party_id: str, data: PartyInput, material: ThresholdPartyMaterial,
                 config: HEConfig, rng: ByteSource = os.urandom, ledger: RoundLedger | None = None) -> None:
        """ledger: this party's memory of rounds: one partial decryption per round across attempts
        (two decryptions of sums that share this party's unchanged update would let their
        difference isolate another party), no rounds backwards."""
        if party_id not in ctx.party_ids or party_id != material.party_id:
            raise ValueError(f"party {party_id!r} is not selected for this round or holds another key")
        data.validate(ctx)
        if data.control_delta is not None and not np.all(np.isfinite(data.control_delta)):
            raise ValueError("control_delta has non-finite values")
        self.ctx, self.party_id, self.data, self.config, self.rng = ctx, party_id, data, config, rng
        self.material, self.public = material, material.public
        self.layout = tr.TLayout.for_round(ctx, config, self.public)
        self.ledger = ledger or RoundLedger()
        self.ledger.begin(ctx.round)
        self._c1: np.ndarray | None = None  # own upload's c1 (NTT form, uint32: see TLayout.unpack)
        self._sum: tuple[tuple[str, ...], np.ndarray] | None = None  # checked (contributors, c1 sum as uint32)
        self._recovered = False

    def handle(self, message: Message) -> Message | None:
        stage = {INPUT_STAGE: self._input, ATTEST_STAGE: self._attest, DECRYPT_STAGE: self._decrypt,
                 RECOVER_STAGE: self._recover}.get(message.stage)
        if stage is None:
            raise ProtocolError("unexpected stage")
        return stage(message)

    def _reader(self, message: Message, kind: int) -> framing.Reader:
        return framing.Reader(message.payload, kind, self.public.key_id, self.ctx.round)

    def _input(self, message: Message) -> Message:
        if self._c1 is not None or message.payload:
            raise ProtocolError("unexpected message")
        lay, ring = self.layout, self.layout.ring
        bulk = prg_reader(self.rng(32))  # dither, u, e0, e1: ~70 MB at 8.4M parameters
        ints = lay.codec.encode(self.data.delta, self.data.control_delta, self.data.weight, bulk)  # Z_2^b
        n_ct, msg_of = rlwe.message_of(ring, ints, lay.codec.bits, lay.k, lay.budget.delta_bits)
        c0_parts, c1_parts = [b""] * n_ct, [b""] * n_ct
        c1 = np.empty((n_ct, ring.size, ring.n), dtype=np.uint32)  # kept for he/attest

        def emit(c: int, x0: np.ndarray, x1: np.ndarray) -> None:  # on worker threads, disjoint slots
            c0_parts[c], c1_parts[c] = lay.pack(x0), lay.pack(x1)
            c1[c] = x1

        a = rlwe.crs(ring, self.public.label.encode())
        rlwe.encrypt_each(ring, a, self.public.b_ntt, n_ct, msg_of, bulk, emit)
        self._c1 = c1
        head = framing.header(tr.KIND_TINPUT, self.public.key_id, self.ctx.round)
        return Message(INPUT_STAGE, b"".join([head, *c0_parts, *c1_parts]))

    def _contributors(self, r: framing.Reader) -> tuple[str, ...]:
        ids = framing.read_ids(r)
        tr.check_ids(ids, self.ctx.party_ids)
        if self.party_id not in ids or len(ids) < self.config.min_contributors:
            raise ProtocolError("unexpected message")
        return ids

    def _attest(self, message: Message) -> Message:
        # Attesting is harmless to repeat: h(own c1) is a public function of what the server holds.
        if self._c1 is None:
            raise ProtocolError("unexpected message")
        r = self._reader(message, tr.KIND_ATTEST)
        ids = self._contributors(r)
        digest = bytes(r.take(32))
        r.end()
        script = tr.transcript(self.public, self.ctx, ids, digest)
        alpha, beta = rlwe.challenge(self.layout.ring, script, self.layout.n_ct)
        evals = tr.evals_to_bytes(rlwe.linear_hash(self.layout.ring, self._c1, alpha, beta))
        sig = Ed25519PrivateKey.from_private_bytes(self.material.sign_key).sign(script + evals)
        return Message(ATTEST_STAGE, framing.header(tr.KIND_ATTESTED, self.public.key_id, self.ctx.round) + evals + sig)

    def _decrypt(self, message: Message) -> Message:
        if self._c1 is None or self._sum is not None:
            raise ProtocolError("unexpected message")  # at most one partial decryption per round
        lay, ring = self.layout, self.layout.ring
        r = self._reader(message, tr.KIND_TDECRYPT)
        ids = self._contributors(r)
        packed = r.take(lay.elems_bytes)
        c1_sum = lay.unpack(packed, np.uint32)
        script = tr.transcript(self.public, self.ctx, ids, tr.sum_hash(packed))
        total = np.zeros((rlwe.CHALLENGES, ring.size), dtype=np.uint64)
        for pid in ids:
            evals = r.take(lay.evals_bytes)
            sig = r.take(tr.SIG_LEN)
            try:
                Ed25519PublicKey.from_public_bytes(self.public.sign_pub(pid)).verify(
                    bytes(sig), script + bytes(evals))
            except (InvalidSignature, ValueError):
                raise ProtocolError("bad signature") from None
            total = (total + tr.evals_from(lay, evals)) % np.array(ring.primes, dtype=np.uint64)
        r.end()
        alpha, beta = rlwe.challenge(ring, script, lay.n_ct)
        if not np.array_equal(total, rlwe.linear_hash(ring, c1_sum, alpha, beta)):
            raise ProtocolError("unexpected message")  # not the sum of the attested uploads
        self.ledger.claim_unmask(self.ctx.round)  # on disk before the partial decryption leaves
        self._sum = (ids, c1_sum)
        head = framing.header(tr.KIND_PARTIAL, self.public.key_id, self.ctx.round)
        return Message(DECRYPT_STAGE, head + self._partial(c1_sum, self.material.s_ntt))

    def _partial(self, c1_sum: np.ndarray, share: np.ndarray) -> bytes:
        """c1_sum * share + flooding, packed one ciphertext at a time."""
        lay = self.layout
        parts = [b""] * lay.n_ct

        def emit(c: int, d: np.ndarray) -> None:  # on worker threads, disjoint slots
            parts[c] = lay.pack(d)

        flood = prg_reader(self.rng(32))  # 12 bytes per coefficient
        rlwe.partial_decrypt_each(lay.ring, lay.n_ct, lambda c: c1_sum[c], share, lay.budget.flood_bits, flood, emit)
        return b"".join(parts)

    def _recover(self, message: Message) -> Message:
        if self._sum is None or self._recovered:
            raise ProtocolError("unexpected message")
        ids, c1_sum = self._sum
        ring, pub = self.layout.ring, self.public
        r = self._reader(message, tr.KIND_RECOVER)
        answered, missing = framing.read_ids(r), framing.read_ids(r)
        r.end()
        tr.check_ids(answered, ids)
        tr.check_ids(missing, pub.roster)
        if (self.party_id not in answered or len(answered) < pub.threshold or not missing
                or set(answered) | set(missing) != set(pub.roster) or set(answered) & set(missing)):
            raise ProtocolError("unexpected message")
        self._recovered = True
        share = np.zeros_like(self.material.s_ntt)
        for pid in missing:
            share = ring.add(share, self.material.shares[pid])
        lam = rlwe.lagrange_at_zero(ring, pub.point(self.party_id), tuple(pub.point(p) for p in answered))
        head = framing.header(tr.KIND_RECOVERED, pub.key_id, self.ctx.round)
        return Message(RECOVER_STAGE, head + self._partial(c1_sum, ring.scalar_mul(share, lam)))
