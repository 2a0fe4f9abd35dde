"""What both sides of a threshold `he` round derive from public facts: the layout (secagg's
fixed-point codec, values per coefficient, ciphertext count), ring-element bytes, the signed
contributor-set statement, the quorum and the mask keys.

Messages (after framing's common header `SFHE | version | kind | key_id | round`):

    TINPUT   server -> party    nonce (16 bytes): with key, federation, round, attempt it names tau
    UPLOAD   party -> server    c0 = a_tau*s_i + e_i + Delta*m_i (coefficient form), n_ct x L x N
    SIGN     server -> party    contributor set C
    SIGNED   party -> server    Ed25519 signature of (key, federation, round, C)
    TDECRYPT server -> party    C | signers | their signatures | decryptor set D
    ANSWER   party -> server    a_tau * lambda_j^D * sum_{i in C} share_j(s_i) + flooding + zero share

Residues travel as little-endian 32-bit words; a residue >= its prime is malformed.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

import numpy as np

from securefed.protocols.base import ProtocolError, RoundContext
from securefed.protocols.encoding import FixedPointCodec
from securefed.protocols.he import framing, rlwe
from securefed.protocols.he.threshold import scheme
from securefed.protocols.he.config import HEConfig
from securefed.protocols.he.ring import Ring
from securefed.protocols.he.threshold.keys import ThresholdPublic, threshold_for

KIND_TINPUT, KIND_UPLOAD, KIND_SIGN, KIND_SIGNED, KIND_TDECRYPT, KIND_ANSWER = range(11, 17)
NONCE_LEN = 16
SIG_LEN = 64


@dataclass(frozen=True)
class TLayout:
    ring: Ring
    codec: FixedPointCodec
    budget: scheme.Budget
    k: int  # values per coefficient
    n_ct: int  # ciphertexts per party

    @classmethod
    def for_round(cls, ctx: RoundContext, config: HEConfig, public: ThresholdPublic) -> "TLayout":
        if not set(ctx.party_ids) <= set(public.roster):
            raise ValueError("round selects parties outside the key's roster")
        q = quorum(len(public.roster), public.threshold)
        if len(ctx.party_ids) < q:
            raise ValueError(f"round selects {len(ctx.party_ids)} parties; threshold he needs a quorum of {q} "
                             f"of the {len(public.roster)} key holders to sign the contributor set")
        ring = rlwe.ring_for()
        codec = FixedPointCodec.for_round(len(ctx.party_ids), ctx.vector_len, ctx.has_control, ctx.max_weight,
                                          config.clip, config.clip, config.precision_bits)
        budget = scheme.Budget.size(ring, len(public.roster), config.stat_security)
        k = rlwe.values_per_coeff(budget, codec.bits)
        return cls(ring, codec, budget, k, -(-codec.length // (k * ring.n)))

    @property
    def ct_bytes(self) -> int:
        """One ciphertext's ring element: L*N residues as little-endian 32-bit words (3% more bytes
        than 31-bit packing, and no bit unpacking for the server: a view of the message)."""
        return self.ring.size * self.ring.n * 4

    @property
    def elems_bytes(self) -> int:
        return self.n_ct * self.ct_bytes

    @property
    def noise_bound(self) -> float:
        """Delta/4: the budget keeps honest noise below it (scheme.Budget); decoding needs < Delta/2."""
        return 2.0 ** (self.budget.delta_bits - 2)

    def pack(self, x: np.ndarray) -> bytes:
        return np.ascontiguousarray(x, dtype="<u4").tobytes()

    def view(self, data: bytes | memoryview) -> np.ndarray:
        """-> (n_ct, L, N) uint32 view of the message's residues; ProtocolError unless the size is
        right and every residue is below its prime. No copy."""
        if memoryview(data).nbytes != self.elems_bytes:
            raise ProtocolError("malformed message")
        x = np.frombuffer(data, dtype="<u4").reshape(self.n_ct, self.ring.size, self.ring.n)
        p = np.array(self.ring.primes, dtype=np.uint32).reshape(-1, 1)
        for c in range(self.n_ct):  # one ciphertext at a time: no boolean array of the whole message
            if np.any(x[c] >= p):
                raise ProtocolError("malformed message")
        return x

    def unpack(self, data: bytes | memoryview) -> np.ndarray:
        """-> (n_ct, L, N) uint64 residues (a copy), checked as `view` does."""
        return self.view(data).astype(np.uint64)

    def accumulate(self, acc: np.ndarray, x: np.ndarray, subtract: bool = False) -> None:
        """acc (uint64, reduced) +=/-= x (a checked view) mod p, in place, one ciphertext at a time."""
        p = self.ring._p
        t = np.empty((self.ring.size, self.ring.n), dtype=np.uint64)
        for a, b in zip(acc, x):
            if subtract:
                np.add(a, p, out=a)
                np.subtract(a, b, out=a)  # in (0, 2p)
            else:
                np.add(a, b, out=a)  # < 2p
            np.subtract(a, p, out=t)
            np.minimum(a, t, out=a)


def quorum(n: int, t: int) -> int:
    """Signatures on C a decryptor needs, from distinct key holders: any two quorums share >= t
    parties, so at least one honest one (colluders are < t), and an honest party signs one C per
    round: at most one C per round can ever be decrypted, whatever sets the server shows whom."""
    return min(n, -(-(n + t) // 2))


def contributors_floor(config: HEConfig, t: int, round_min: int = 1) -> int:
    """The fewest contributors a sum may have: the he config's min_contributors, the round's own floor
    (RoundContext.min_contributors: sampling.min_round_size, set by each side from its own config,
    never from the wire), and never fewer than t."""
    return max(config.min_contributors, t, round_min)


def round_needs(n: int, fraction: float, config: HEConfig) -> tuple[int, int, int]:
    """(t, quorum, parties a round must select) for a roster of n: the config-time check."""
    t = threshold_for(n, fraction)
    q = quorum(n, t)
    return t, q, max(q, contributors_floor(config, t))


def sign_statement(public: ThresholdPublic, federation: str, round_: int, contributors: tuple[str, ...]) -> bytes:
    """What a signer binds: key, federation, round (not the attempt: one C per round) and C."""
    return b"|".join([b"securefed-he-contributors-v1", public.key_id, federation.encode(),
                      struct.pack("<Q", round_), framing.encode_ids(contributors)])


def set_hash(statement: bytes) -> bytes:
    return hashlib.sha256(statement).digest()


def mask_key(pair_key: bytes, seed: bytes, statement: bytes, decryptors: tuple[str, ...]) -> bytes:
    """One pair's zero-sharing key for one answer set: pair key, tau, C and D."""
    return hashlib.sha256(b"|".join([b"securefed-he-zero-v1", pair_key, seed, set_hash(statement),
                                     framing.encode_ids(decryptors)])).digest()


def check_ids(ids: tuple[str, ...], allowed: tuple[str, ...]) -> None:
    if tuple(sorted(set(ids))) != ids or not set(ids) <= set(allowed):
        raise ProtocolError("unexpected message")
