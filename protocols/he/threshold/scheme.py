"""Hazmat: key-homomorphic RLWE for threshold sums (the threshold design's lattice layer).

No ring element that another party or the server chose is ever multiplied by a key, a key share
or a Shamir share: the only element that meets key material is a_tau, public randomness every
party derives itself from the round transcript tau = (key, federation, round, attempt, nonce).

    party i     c0_i = INTT(a_tau * s_i) + e_i + Delta*m_i      s_i ternary (NTT form), e_i CBD
    decryptor j y_j  = INTT(a_tau * lambda_j^D * sum_{i in C} share_j(s_i)) + f_j + z_j
                       f_j uniform in [-2^F, 2^F) (flooding), z_j = sum_{k in D, k != j} +-PRG(k_jk, .)
                       (a pseudorandom sharing of zero over D: z_j cancel in the sum)
    server      sum_{i in C} c0_i - sum_{j in D} y_j = Delta*M_C + sum e_i - sum f_j

One inverse transform per ciphertext for a party (a_tau is sampled in NTT form, s_i kept in NTT
form) and per answer for a decryptor; the server adds and decodes, no transform at all.

Why the Lagrange coefficient goes inside, before flooding: lambda_j^D mod Q is as large as Q, and
lambda * f would swamp Delta. Why the zero sharing z: with two or more honest decryptors in D,
each one's lambda_j^D * share_j is a fixed multiple of S_C plus what the colluders know, with a
coefficient as large as Q; two such answers would let the server solve a 2-dimensional short
vector problem for the flooding terms and read a_tau * S_C exactly (hence S_C; across contributor
sets, single keys). z makes the honest answers uniform subject to their sum, which is
a_tau*S_C + flooding + known terms: exactly what the decrypted sum gives (docs/threat-model.md).

Noise: e_i is CBD(21) (variance 10.5), so the sum over <= n contributors has sd sqrt(10.5 n);
B = TAIL_SIGMAS sd. Every honest answer smudges B: 2^F >= 2^lambda * N * B * A, with A the answers
a party gives per round (ledger-bounded), so all of one round's answers together are within
2^-lambda of answers computed from the sum alone. Delta = 2^delta bounds B + n * 2^F (at most n
answers in one decode) with a 4x margin; the rest of log2 Q carries the packed values.
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass
from typing import Callable

import numpy as np

from securefed.protocols.he import rlwe
from securefed.protocols.he.ring import ByteSource, Ring, sample_cbd
from securefed.protocols.secagg.primitives import prg_reader

TAIL_SIGMAS = 10.0  # Gaussian tail beyond 10 sd: < 2e-23 per coefficient
CBD_VAR = 10.5


def answers_per_round(n_parties: int) -> int:
    """How many decryption answers a party gives in one round, across attempts (its ledger keeps
    count): a first decryptor set and one leave-one-out set per member, twice over (a retried
    attempt), with room to spare."""
    return 2 * n_parties + 2


@dataclass(frozen=True)
class Budget:
    """Everything sized from (N, log Q, federation size n, statistical security lambda)."""

    err_bound: float  # B: tail bound on sum_{i in C} e_i
    flood_bits: int  # F
    delta_bits: int  # Delta = 2^delta
    payload_bits: int  # bits of V per coefficient

    @classmethod
    def size(cls, ring: Ring, n_parties: int, stat_security: int) -> "Budget":
        err = TAIL_SIGMAS * math.sqrt(CBD_VAR * n_parties)
        flood = math.ceil(stat_security + math.log2(ring.n) + math.log2(err) + math.log2(answers_per_round(n_parties)))
        if not 33 <= flood <= 93:
            raise ValueError(f"stat_security={stat_security}: flooding noise of 2^{flood} outside [2^33, 2^93]")
        delta = math.ceil(math.log2(err + n_parties * 2.0**flood)) + 2  # noise < Delta / 4
        return cls(err, flood, delta, math.floor(math.log2(ring.modulus)) - delta - 1)


def round_seed(key_id: bytes, federation: str, round_: int, attempt: int, nonce: bytes) -> bytes:
    """32 bytes naming one encryption round tau; a_tau and every mask key hang off it."""
    return hashlib.sha256(b"|".join([b"securefed-he-tau-v1", key_id, federation.encode(),
                                     struct.pack("<QQ", round_, attempt), nonce])).digest()


def uniform_from(ring: Ring, key: bytes) -> np.ndarray:
    """Uniform residues (L, N) from AES-256-CTR keyed with `key` (64 bits per residue mod p:
    bias < 2^-33)."""
    raw = np.frombuffer(prg_reader(key)(8 * ring.size * ring.n), dtype="<u8").reshape(ring.size, ring.n)
    return raw % ring._p


def crs(ring: Ring, seed: bytes, c: int) -> np.ndarray:
    """a_tau for ciphertext c, NTT form (L, N): nobody picks it."""
    return uniform_from(ring, hashlib.sha256(b"securefed-he-crs-v2|" + seed + struct.pack("<Q", c)).digest())


def encrypt_each(ring: Ring, s_ntt: np.ndarray, seed: bytes, n_ct: int, msg_of: Callable[[int], np.ndarray],
                 rng: ByteSource, emit: Callable[[int, np.ndarray], None]) -> None:
    """emit(c, c0_c) with c0_c = INTT(a_tau,c * s) + e_c + msg_of(c), coefficient form, reduced.
    One inverse transform per ciphertext; randomness (e) is drawn first, as a whole."""
    e = sample_cbd(rng, (n_ct, ring.n))
    fs, plan = ring.fixed(s_ntt), ring._plan

    def one(c: int) -> None:
        y = ring.reduce(ring.mul_fixed(crs(ring, seed, c), fs), 2, out=np.empty((ring.size, ring.n), dtype=np.uint32))
        plan.inverse(y)
        y += ring.from_small(e[c])  # < 2p < 2^32
        emit(c, ring.reduce(msg_of(c) + y, 4))  # < 3p

    rlwe.each_ciphertext(n_ct, one)


def answer_each(ring: Ring, seed: bytes, n_ct: int, w_ntt: np.ndarray, flood_bits: int, rng: ByteSource,
                masks: list[tuple[bool, bytes]], emit: Callable[[int, np.ndarray], None]) -> None:
    """emit(c, INTT(a_tau,c * w) + flooding + sum of masks) per ciphertext. masks: (add?, key) per
    peer of the decryptor set; mask c of a pair is uniform_from(H(key, c)), added by one side and
    subtracted by the other."""
    hi, lo = rlwe.flood_draw(ring, rng, n_ct, flood_bits)
    fw, plan = ring.fixed(w_ntt), ring._plan

    def one(c: int) -> None:
        y = ring.reduce(ring.mul_fixed(crs(ring, seed, c), fw), 2, out=np.empty((ring.size, ring.n), dtype=np.uint32))
        plan.inverse(y)
        out = ring.reduce(rlwe.flood_ct(ring, hi[c], lo[c]) + y, 2)
        for add, key in masks:
            z = uniform_from(ring, hashlib.sha256(key + struct.pack("<Q", c)).digest())
            out = ring.add(out, z) if add else ring.sub(out, z)
        emit(c, out)

    rlwe.each_ciphertext(n_ct, one)


def combined_share(ring: Ring, shares: list[np.ndarray], point: int, points: tuple[int, ...]) -> np.ndarray:
    """lambda_point^points * sum(shares) (NTT form): this decryptor's additive part of S_C over D."""
    acc = shares[0].copy()
    for s in shares[1:]:
        acc = ring.add(acc, s)
    return ring.scalar_mul(acc, rlwe.lagrange_at_zero(ring, point, points))
