"""Bytes of threshold `he` key material: ring elements as little-endian uint32 residues, and a
JSON head plus binary blobs (keygen messages, bundles, kits). Parsing raises KeygenError, one line."""

from __future__ import annotations

import json
import struct

import numpy as np

from securefed.protocols.he.ring import Ring


class KeygenError(ValueError):
    """A keygen message is malformed, unsigned, or inconsistent with the roster (one line)."""


def elem_bytes(x: np.ndarray) -> bytes:
    return np.ascontiguousarray(x, dtype="<u4").tobytes()


def elem_from(ring: Ring, data: bytes, what: str) -> np.ndarray:
    if len(data) != ring.size * ring.n * 4:
        raise KeygenError(f"{what}: wrong length")
    x = np.frombuffer(data, dtype="<u4").astype(np.uint64).reshape(ring.size, ring.n)
    if np.any(x >= np.array(ring.primes, dtype=np.uint64).reshape(-1, 1)):
        raise KeygenError(f"{what}: residue out of range")
    return x


def pack(obj: dict, blobs: list[bytes]) -> bytes:
    head = json.dumps({**obj, "blobs": [len(b) for b in blobs]}, sort_keys=True).encode()
    return struct.pack("<I", len(head)) + head + b"".join(blobs)


def unpack(data: bytes, what: str) -> tuple[dict, list[bytes]]:
    try:
        (n,) = struct.unpack_from("<I", data)
        obj = json.loads(data[4 : 4 + n])
        pos, blobs = 4 + n, []
        for size in obj.pop("blobs"):
            if not isinstance(size, int) or size < 0 or pos + size > len(data):
                raise ValueError
            blobs.append(data[pos : pos + size])
            pos += size
        if pos != len(data) or not isinstance(obj, dict):
            raise ValueError
    except (ValueError, KeyError, TypeError, struct.error, AttributeError):
        raise KeygenError(f"{what}: malformed") from None
    return obj, blobs
