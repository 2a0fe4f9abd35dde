"""The neighbour graph: who masks with whom and who holds whose shares.

complete (SecAgg): every pair. sparse (SecAgg+, Bell et al. 2020): a Harary-style ring over a
random permutation of the parties, each party joined to the k/2 nearest on either side, so the
graph is exactly k-regular and symmetric. The permutation comes from a public seed derived from
(federation id, round): every participant computes the same graph, and the server cannot choose it.
"""

from __future__ import annotations

import functools
import struct

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


@functools.lru_cache(maxsize=16)
def neighbours(n: int, k: int, seed: bytes) -> tuple[frozenset[int], ...]:
    """Neighbour sets by party index. k >= n - 1 gives the complete graph. Cached: a pure function
    of public inputs that every session of a simulated round would otherwise recompute."""
    if n < 2 or k < 1:
        raise ValueError("graph needs n >= 2 and k >= 1")
    if k >= n - 1:
        everyone = frozenset(range(n))
        return tuple(everyone - {i} for i in range(n))
    if k % 2:
        raise ValueError("sparse graph needs an even k")
    order = permutation(n, seed)
    half = k // 2
    sets: list[set[int]] = [set() for _ in range(n)]
    for pos, party in enumerate(order):
        for step in range(1, half + 1):
            other = order[(pos + step) % n]
            sets[party].add(other)
            sets[other].add(party)
    return tuple(frozenset(s) for s in sets)
