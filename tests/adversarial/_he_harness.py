"""A malicious threshold-`he` server for attack tests: it drives real party sessions (the production
ThresholdParty, in process) stage by stage and sends each whatever it likes. It holds the server
material and, where a test says so, the colluding parties' material."""

from __future__ import annotations

import hashlib
import struct

import numpy as np

from securefed.protocols.base import Message, PartyInput, ProtocolError, RoundContext
from securefed.protocols.he import HE, HEConfig, framing, rlwe
from securefed.protocols.he.threshold import layout as tl
from securefed.protocols.he.threshold import scheme
from securefed.protocols.he.threshold.party import DECRYPT_STAGE, INPUT_STAGE, SIGN_STAGE

IDS = ("a", "b", "c", "d", "e")  # t = 3, quorum 4
M = 600
FED = "fed-adversarial"


def federation(config: HEConfig | None = None):
    he = HE(config or HEConfig(threshold_fraction=0.5))
    public, mats = he.provision(IDS)
    return he, public, mats


class Session:
    """One attempt of a round: fresh real party sessions over the parties' long-lived material."""

    def __init__(self, fed, round_: int, selected=IDS, seed: int = 0, inputs=None, attempt: int = 0,
                 nonce: bytes = b"\x07" * tl.NONCE_LEN, min_contributors: int = 1):
        self.he, self.public, self.mats = fed
        self.ctx = RoundContext(FED, round_, selected, M, False, 16, attempt, min_contributors)
        rng = np.random.default_rng(seed)
        self.inputs = inputs or {p: PartyInput((rng.standard_normal(M) * 0.2).astype(np.float32), None,
                                               float(rng.integers(1, 17))) for p in selected}
        self.parties = {p: self.he.party(self.ctx, p, self.inputs[p], self.mats[p]) for p in selected}
        self.lay = tl.TLayout.for_round(self.ctx, self.he.config, self.public)
        self.ring = self.lay.ring
        self.nonce = nonce
        self.seed = scheme.round_seed(self.public.key_id, FED, round_, attempt, nonce)

    def head(self, kind: int, round_: int | None = None) -> bytes:
        return framing.header(kind, self.public.key_id, self.ctx.round if round_ is None else round_)

    def upload(self, pid: str) -> np.ndarray:
        msg = Message(INPUT_STAGE, self.head(tl.KIND_TINPUT) + self.nonce)
        r = framing.Reader(self.parties[pid].handle(msg).payload, tl.KIND_UPLOAD, self.public.key_id, self.ctx.round)
        return self.lay.unpack(r.take(self.lay.elems_bytes))

    def sign(self, pid: str, ids: tuple[str, ...]) -> bytes:
        body = self.head(tl.KIND_SIGN) + framing.encode_ids(ids)
        return self.parties[pid].handle(Message(SIGN_STAGE, body)).payload[len(self.head(tl.KIND_SIGNED)) :]

    def forged_sign(self, pid: str, ids: tuple[str, ...]) -> bytes:
        """A colluder's signature (the attacker holds its key)."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return Ed25519PrivateKey.from_private_bytes(self.mats[pid].sign_key).sign(self.statement(ids))

    def statement(self, ids: tuple[str, ...]) -> bytes:
        return tl.sign_statement(self.public, FED, self.ctx.round, ids)

    def decrypt_msg(self, ids, sigs: dict[str, bytes], decryptors, extra: bytes = b"") -> Message:
        signers = tuple(sorted(sigs))
        return Message(DECRYPT_STAGE, b"".join([self.head(tl.KIND_TDECRYPT), framing.encode_ids(ids),
                                                framing.encode_ids(signers), *(sigs[p] for p in signers),
                                                framing.encode_ids(tuple(decryptors)), extra]))

    def answer(self, pid: str, msg: Message) -> np.ndarray:
        r = framing.Reader(self.parties[pid].handle(msg).payload, tl.KIND_ANSWER, self.public.key_id, self.ctx.round)
        return self.lay.unpack(r.take(self.lay.elems_bytes))

    def crs(self, c: int = 0) -> np.ndarray:
        return scheme.crs(self.ring, self.seed, c)

    def mask(self, a: str, b: str, ids, decryptors, c: int = 0) -> np.ndarray:
        """The zero-sharing mask of pair (a, b) (a colluder in the pair knows it)."""
        key = tl.mask_key(self.mats[a].pair_keys[b], self.seed, self.statement(ids), tuple(decryptors))
        return scheme.uniform_from(self.ring, hashlib.sha256(key + struct.pack("<Q", c)).digest())

    def digits(self, x: np.ndarray) -> np.ndarray:
        """Raw digits of Delta*V + noise (no noise check): what an attacker reads."""
        lay = self.lay
        return rlwe.decode_message(self.ring, x, lay.codec.bits, lay.k, lay.budget.delta_bits, 0, strict=False)

    def quantized(self, pid: str) -> np.ndarray:
        d = self.inputs[pid]
        return d.delta.astype(np.float64) * d.weight / self.lay.codec.step


def refuses(party, message: Message) -> bool:
    try:
        party.handle(message)
    except ProtocolError:
        return True
    return False


def garbage_answer(session, round_: int, rng: np.random.Generator, stage: str = DECRYPT_STAGE) -> Message:
    """A well-formed answer (or, stage=INPUT_STAGE, upload) of uniform residues from `session` (a
    malicious decryptor or contributor)."""
    lay = session.layout
    p = np.array(lay.ring.primes, dtype=np.uint64).reshape(-1, 1)
    junk = rng.integers(0, 2**31, (lay.n_ct, lay.ring.size, lay.ring.n), dtype=np.uint64) % p
    kind = tl.KIND_UPLOAD if stage == INPUT_STAGE else tl.KIND_ANSWER
    return Message(stage, framing.header(kind, session.public.key_id, round_) + lay.pack(junk))
