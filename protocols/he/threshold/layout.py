"""What both sides of a threshold `he` round derive from public facts: the layout (secagg's
fixed-point codec, values per coefficient, ciphertext count), ring-element bytes, and the signed
attestation transcript of the linear sum check.

Messages (after framing's common header `SFHE | version | kind | key_id | round`):

    TINPUT    party -> server    c0 (coefficient form) | c1 (NTT form), n_ct x L x N residues each
    ATTEST    server -> party    contributors | SHA-256(c1 sum)
    ATTESTED  party -> server    h(own c1) (C x L residues) | Ed25519 signature
    TDECRYPT  server -> party    contributors | c1 sum | each contributor's ATTESTED body
    PARTIAL   party -> server    c1_sum * s_i + flooding (coefficient form)
    RECOVER   server -> party    answered set A | missing set D
    RECOVERED party -> server    c1_sum * lambda_i^A * sum_{j in D} share_{j,i} + flooding

Residues are packed at 31 bits each (secagg's bit packer); a residue >= its prime is malformed.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

import numpy as np

from securefed.protocols.base import ProtocolError, RoundContext
from securefed.protocols.encoding import FixedPointCodec, pack_bits, packed_size, unpack_bits
from securefed.protocols.he import framing, rlwe
from securefed.protocols.he.config import HEConfig
from securefed.protocols.he.ring import Ring
from securefed.protocols.he.threshold.keys import ThresholdPublic

KIND_TINPUT, KIND_ATTEST, KIND_ATTESTED, KIND_TDECRYPT, KIND_PARTIAL, KIND_RECOVER, KIND_RECOVERED = range(4, 11)
RESIDUE_BITS = 31
SIG_LEN = 64


@dataclass(frozen=True)
class TLayout:
    ring: Ring
    codec: FixedPointCodec
    budget: rlwe.NoiseBudget
    k: int  # values per coefficient
    n_ct: int  # ciphertexts per party

    @classmethod
    def for_round(cls, ctx: RoundContext, config: HEConfig, public: ThresholdPublic) -> "TLayout":
        if not set(ctx.party_ids) <= set(public.roster):
            raise ValueError("round selects parties outside the key's roster")
        if len(ctx.party_ids) < public.threshold:
            raise ValueError(f"round selects {len(ctx.party_ids)} parties; threshold he needs t={public.threshold}")
        ring = rlwe.ring_for()
        codec = FixedPointCodec.for_round(len(ctx.party_ids), ctx.vector_len, ctx.has_control, ctx.max_weight,
                                          config.clip, config.clip, config.precision_bits)
        budget = rlwe.NoiseBudget.size(ring, len(public.roster), config.stat_security)
        k = rlwe.values_per_coeff(budget, codec.bits)
        return cls(ring, codec, budget, k, -(-codec.length // (k * ring.n)))

    @property
    def ct_bytes(self) -> int:
        """One ciphertext's ring element: L*N residues of 31 bits fill whole bytes (8 | N), so a
        packed (n_ct, L, N) array is its ciphertexts' packings back to back."""
        return packed_size(self.ring.size * self.ring.n, RESIDUE_BITS)

    @property
    def elems_bytes(self) -> int:
        return self.n_ct * self.ct_bytes

    @property
    def noise_bound(self) -> float:
        """Delta/4: the budget keeps honest noise below it (rlwe.NoiseBudget); decoding needs < Delta/2."""
        return 2.0 ** (self.budget.delta_bits - 2)

    def pack(self, x: np.ndarray) -> bytes:
        return pack_bits(x.reshape(-1), RESIDUE_BITS)

    def unpack(self, data: bytes | memoryview, dtype: type = np.uint64) -> np.ndarray:
        """-> (n_ct, L, N) residues; ProtocolError unless canonical and every residue < its prime.
        One ciphertext at a time (no second array of the whole upload's size in flight).
        dtype=np.uint32 halves the memory, for arithmetic that widens each ciphertext as it
        uses it: never give such an array to Ring.add (uint32 sums wrap around)."""
        view, size, shape = memoryview(data), self.ct_bytes, (self.ring.size, self.ring.n)
        if view.nbytes != self.elems_bytes:
            raise ProtocolError("malformed message")
        p = np.array(self.ring.primes, dtype=np.uint64).reshape(-1, 1)
        out = np.empty((self.n_ct, *shape), dtype=dtype)
        for c in range(self.n_ct):
            try:
                x = unpack_bits(bytes(view[c * size : (c + 1) * size]), RESIDUE_BITS, shape[0] * shape[1])
            except ValueError:
                raise ProtocolError("malformed message") from None
            x = x.reshape(shape)
            if np.any(x >= p):
                raise ProtocolError("malformed message")
            out[c] = x
        return out

    @property
    def evals_bytes(self) -> int:
        return rlwe.CHALLENGES * self.ring.size * 4


def transcript(public: ThresholdPublic, ctx: RoundContext, contributors: tuple[str, ...], sum_hash: bytes) -> bytes:
    """What an attestation binds: key, federation, round and attempt, the exact contributor list,
    the c1 sum."""
    return b"|".join([b"securefed-he-attest-v1", public.key_id, ctx.federation_id.encode(),
                      struct.pack("<QQ", ctx.round, ctx.attempt), framing.encode_ids(contributors), sum_hash])


def evals_to_bytes(h: np.ndarray) -> bytes:
    return np.ascontiguousarray(h, dtype="<u4").tobytes()


def evals_from(layout: TLayout, data: bytes | memoryview) -> np.ndarray:
    h = np.frombuffer(bytes(data), dtype="<u4").astype(np.uint64).reshape(rlwe.CHALLENGES, layout.ring.size)
    if np.any(h >= np.array(layout.ring.primes, dtype=np.uint64)):
        raise ProtocolError("malformed message")
    return h


def sum_hash(packed_c1: bytes | memoryview) -> bytes:
    return hashlib.sha256(packed_c1).digest()


def check_ids(ids: tuple[str, ...], allowed: tuple[str, ...]) -> None:
    if tuple(sorted(set(ids))) != ids or not set(ids) <= set(allowed):
        raise ProtocolError("unexpected message")
