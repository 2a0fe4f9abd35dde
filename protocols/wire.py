"""Length-checked framing for float vectors inside protocol messages (no pickle, ever)."""

from __future__ import annotations

import struct

import numpy as np

from securefed.protocols.base import ProtocolError

_HEADER = struct.Struct("<4sIQ")  # magic, format version, element count


_MAGIC = {np.dtype("<f4"): b"F32V", np.dtype("<f8"): b"F64V"}
_DTYPE = {magic: dtype for dtype, magic in _MAGIC.items()}


def pack_vector(vector: np.ndarray, dtype: str = "<f8") -> bytes:
    """A float vector at the given precision ("<f4" or "<f8"), with a magic naming it."""
    v = np.ascontiguousarray(vector, dtype=dtype)
    return _HEADER.pack(_MAGIC[v.dtype], 1, v.size) + v.tobytes()


def unpack_vector(payload: bytes, expected_len: int) -> np.ndarray:
    """The float64 values of a pack_vector payload of either precision. Raises ProtocolError on a
    wrong magic, version, length or non-finite values."""
    if len(payload) < _HEADER.size:
        raise ProtocolError("malformed message")
    got_magic, version, count = _HEADER.unpack_from(payload)
    dtype = _DTYPE.get(got_magic)
    if dtype is None or version != 1 or count != expected_len:
        raise ProtocolError("malformed message")
    if len(payload) != _HEADER.size + dtype.itemsize * count:
        raise ProtocolError("malformed message")
    v = np.frombuffer(payload, dtype=dtype, offset=_HEADER.size).astype(np.float64)
    if not np.all(np.isfinite(v)):
        raise ProtocolError("malformed message")
    return v
