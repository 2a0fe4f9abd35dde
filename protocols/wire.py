"""Length-checked framing for float vectors inside protocol messages (no pickle, ever)."""

from __future__ import annotations

import struct

import numpy as np

from securefed.protocols.base import ProtocolError

_HEADER = struct.Struct("<4sIQ")  # magic, format version, element count


def pack_f64(vector: np.ndarray, magic: bytes = b"F64V") -> bytes:
    v = np.ascontiguousarray(vector, dtype="<f8")
    return _HEADER.pack(magic, 1, v.size) + v.tobytes()


def unpack_f64(payload: bytes, expected_len: int, magic: bytes = b"F64V") -> np.ndarray:
    """Raises ProtocolError on wrong magic, version, length or non-finite values."""
    if len(payload) < _HEADER.size:
        raise ProtocolError("malformed message")
    got_magic, version, count = _HEADER.unpack_from(payload)
    if got_magic != magic or version != 1 or count != expected_len:
        raise ProtocolError("malformed message")
    if len(payload) != _HEADER.size + 8 * count:
        raise ProtocolError("malformed message")
    v = np.frombuffer(payload, dtype="<f8", offset=_HEADER.size).astype(np.float64)
    if not np.all(np.isfinite(v)):
        raise ProtocolError("malformed message")
    return v
