"""Byte layout of `he` messages: explicit, length-checked, no pickle.

Every message starts with a common header:

    magic "SFHE" | version u8 | kind u8 | key_id (16 bytes) | round u64

then, by kind:

    INPUT    (party -> server, stage he/input):    n_ct u32 | n_ct x (len u32 | SEAL ciphertext)
    DECRYPT  (server -> decryptor, stage he/decrypt): n u16 | n x (len u16 | utf-8 party id)
                                                   | n_ct u32 | n_ct x (len u32 | SEAL ciphertext)
    RESULT   (decryptor -> server, stage he/decrypt): status u8 | count u64 | count x int64

Anything that does not parse exactly (short, long, wrong kind/key/round, oversized element) raises
ProtocolError; ciphertext blobs are returned as views for the caller to validate and load.
"""

from __future__ import annotations

import struct
from typing import Iterable

import numpy as np

from securefed.protocols.base import ProtocolError

MAGIC = b"SFHE"
VERSION = 1
KIND_INPUT, KIND_DECRYPT, KIND_RESULT = 1, 2, 3
STATUS_OK, STATUS_CORRUPT = 0, 1
_HEADER = struct.Struct("<4sBB16sQ")
_U8, _U16, _U32, _U64 = struct.Struct("<B"), struct.Struct("<H"), struct.Struct("<I"), struct.Struct("<Q")


def header(kind: int, key_id: bytes, round_: int) -> bytes:
    return _HEADER.pack(MAGIC, VERSION, kind, key_id, round_)


def blobs(items: Iterable[bytes]) -> Iterable[bytes]:
    """Length-prefix each blob (for streaming assembly with b''.join)."""
    for b in items:
        yield _U32.pack(len(b))
        yield b


class Reader:
    """Cursor over a message that raises ProtocolError instead of reading past the end."""

    def __init__(self, payload: bytes, kind: int, key_id: bytes, round_: int) -> None:
        self.buf = memoryview(payload)
        self.pos = 0
        magic, version, got_kind, got_key, got_round = self._unpack(_HEADER)
        if (magic, version, got_kind, got_key, got_round) != (MAGIC, VERSION, kind, key_id, round_):
            raise ProtocolError("malformed message")

    def _unpack(self, s: struct.Struct) -> tuple:
        if len(self.buf) - self.pos < s.size:
            raise ProtocolError("malformed message")
        out = s.unpack_from(self.buf, self.pos)
        self.pos += s.size
        return out

    def u8(self) -> int:
        return self._unpack(_U8)[0]

    def u16(self) -> int:
        return self._unpack(_U16)[0]

    def u32(self) -> int:
        return self._unpack(_U32)[0]

    def u64(self) -> int:
        return self._unpack(_U64)[0]

    def take(self, n: int) -> memoryview:
        if n < 0 or len(self.buf) - self.pos < n:
            raise ProtocolError("malformed message")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def ciphertexts(self, expected: int, max_len: int) -> list[memoryview]:
        """`n_ct u32 | n_ct x (len u32 | blob)`; n_ct must equal `expected`."""
        if self.u32() != expected:
            raise ProtocolError("malformed message")
        out = []
        for _ in range(expected):
            n = self.u32()
            if n > max_len:
                raise ProtocolError("malformed message")
            out.append(self.take(n))
        return out

    def end(self) -> None:
        if self.pos != len(self.buf):
            raise ProtocolError("malformed message")


def encode_ids(ids: tuple[str, ...]) -> bytes:
    parts = [_U16.pack(len(ids))]
    for pid in ids:
        raw = pid.encode("utf-8")
        parts += [_U16.pack(len(raw)), raw]
    return b"".join(parts)


def read_ids(r: Reader) -> tuple[str, ...]:
    ids = []
    for _ in range(r.u16()):
        try:
            ids.append(bytes(r.take(r.u16())).decode("utf-8"))
        except UnicodeDecodeError:
            raise ProtocolError("malformed message") from None
    return tuple(ids)


def encode_result(key_id: bytes, round_: int, status: int, sums: np.ndarray | None) -> bytes:
    body = b"" if sums is None else np.ascontiguousarray(sums, dtype="<i8").tobytes()
    count = 0 if sums is None else sums.size
    return header(KIND_RESULT, key_id, round_) + _U8.pack(status) + _U64.pack(count) + body


def read_result(payload: bytes, key_id: bytes, round_: int, expected: int) -> np.ndarray | None:
    """-> (expected,) int64 sums, or None when the decryptor reports a corrupt aggregate."""
    r = Reader(payload, KIND_RESULT, key_id, round_)
    status, count = r.u8(), r.u64()
    if status == STATUS_CORRUPT and count == 0:
        r.end()
        return None
    if status != STATUS_OK or count != expected:
        raise ProtocolError("malformed message")
    sums = np.frombuffer(r.take(8 * count), dtype="<i8").astype(np.int64)
    r.end()
    return sums
