"""Shared by the protocol tests: a deterministic byte source in place of the OS CSPRNG."""

from __future__ import annotations

import hashlib


class TestRng:
    """Deterministic byte stream for tests (SHA-256 counter mode); never Python's random."""

    __test__ = False

    def __init__(self, seed: bytes = b"seed") -> None:
        self._key, self._i = hashlib.sha256(seed).digest(), 0

    def __call__(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(self._key + self._i.to_bytes(8, "little")).digest()
            self._i += 1
        return out[:n]
