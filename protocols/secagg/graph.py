"""The neighbour graph: who masks with whom and who holds whose shares.

complete (SecAgg): every pair. sparse (SecAgg+, Bell et al. 2020): a Harary-style ring over a
random permutation of the parties, each party joined to the k/2 nearest on either side, so the
graph is exactly k-regular and symmetric.

Malicious server: the ring order of a round is the parties sorted by a label HKDF(roster seed,
round, party id). The roster seed is the deployment's federation seed (RoundContext.roster_seed: it
mixes every party's revealed seed contribution, so no party grinds its key into a graph it likes), or
in a simulation fixed when the identity keys are pinned (primitives.roster_seed); parties refuse
round numbers that repeat, go backwards or pass the configured rounds, so the server cannot try
round numbers until colluders surround a target. Leaving a party out of the selection only closes
the gap around it (everyone else keeps their relative order), exactly as if that party had dropped
out; it cannot reshuffle the ring.
"""

from __future__ import annotations

import functools
import hashlib
import struct
from typing import Sequence

from securefed.protocols.secagg.primitives import LABEL_GRAPH, hkdf, keystream


def graph_seed(salt: bytes) -> bytes:
    return hkdf(b"", salt, LABEL_GRAPH)


class _Stream:
    """Reads unsigned 64-bit integers from the PRG, refilling in blocks."""

    def __init__(self, seed: bytes) -> None:
        self._seed = seed
        self._counter = 0
        self._buf = b""

    def u64(self) -> int:
        if not self._buf:
            # a fresh key per block keeps each PRG key to one stream
            block_key = hkdf(self._seed, b"", struct.pack("<Q", self._counter))
            self._counter += 1
            self._buf = keystream(block_key, 8 * 512)
        value = struct.unpack_from("<Q", self._buf)[0]
        self._buf = self._buf[8:]
        return value

    def below(self, bound: int) -> int:
        """Uniform in [0, bound) by rejection, no modulo bias."""
        limit = (1 << 64) - (1 << 64) % bound
        while True:
            v = self.u64()
            if v < limit:
                return v % bound


def permutation(n: int, seed: bytes) -> list[int]:
    """Fisher-Yates driven by the seeded PRG."""
    order = list(range(n))
    stream = _Stream(seed)
    for i in range(n - 1, 0, -1):
        j = stream.below(i + 1)
        order[i], order[j] = order[j], order[i]
    return order


def round_order(party_ids: Sequence[str], seed: bytes, round_: int) -> tuple[int, ...]:
    """Indices of `party_ids` in ring order for one round: sorted by a per-party label derived from
    the roster seed and the round, so the relative order of two parties does not depend on who
    else was selected."""
    key = hkdf(seed, struct.pack("<Q", round_), LABEL_GRAPH)
    labels = [hashlib.sha256(key + pid.encode()).digest() for pid in party_ids]
    return tuple(sorted(range(len(party_ids)), key=labels.__getitem__))


@functools.lru_cache(maxsize=16)
def neighbours(n: int, k: int, seed: bytes) -> tuple[frozenset[int], ...]:
    """Neighbour sets by party index over a seeded permutation (the v1 graph; known-answer tests)."""
    return ring(tuple(permutation(n, seed)) if 1 <= k < n - 1 else tuple(range(n)), k)


@functools.lru_cache(maxsize=16)
def ring(order: tuple[int, ...], k: int) -> tuple[frozenset[int], ...]:
    """Neighbour sets by party index: each joined to the k/2 nearest on either side of `order`.
    k >= n - 1 gives the complete graph. Cached: a pure function of public inputs that every
    session of a simulated round would otherwise recompute."""
    n = len(order)
    if n < 2 or k < 1:
        raise ValueError("graph needs n >= 2 and k >= 1")
    if k >= n - 1:
        everyone = frozenset(range(n))
        return tuple(everyone - {i} for i in range(n))
    if k % 2:
        raise ValueError("sparse graph needs an even k")
    half = k // 2
    sets: list[set[int]] = [set() for _ in range(n)]
    for pos, party in enumerate(order):
        for step in range(1, half + 1):
            other = order[(pos + step) % n]
            sets[party].add(other)
            sets[other].add(party)
    return tuple(frozenset(s) for s in sets)
