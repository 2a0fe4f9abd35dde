"""The envelope: one binary frame per gRPC message, every field bound and length-checked.

A logical message (a protocol stage payload, a global adapter, ...) travels as 1..n frames. Each
frame repeats the whole envelope header, so a frame can be checked on its own before anything is
buffered:

    magic "SFT1" | kind u8 | flags u8 (0) | federation id 16B | session id 16B | round u32 |
    attempt u16 | step u16 | seq u64 | chunk index u32 | chunk count u32 | total length u64 |
    stage length u16 | sender length u16 | data length u32 | stage | sender | data

All integers little-endian. The frame's length must equal the header plus the three declared
lengths exactly; anything else is "malformed". No field is ever interpreted by pickle or eval.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from enum import IntEnum

MAGIC = b"SFT1"
_HEADER = struct.Struct("<4sBB16s16sIHHQIIQHHI")
HEADER_SIZE = _HEADER.size
MAX_STAGE_BYTES = 128
MAX_SENDER_BYTES = 64
# Upper bound of everything in a frame except its data; used to size gRPC's per-message limit.
FRAME_OVERHEAD = HEADER_SIZE + MAX_STAGE_BYTES + MAX_SENDER_BYTES
NO_SESSION = bytes(16)
SERVER_SENDER = "server"
_SENDER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class Kind(IntEnum):
    # party -> server
    HELLO = 1  # opens a session; the only frame with NO_SESSION
    READY = 2  # local update done, party session created (answers ROUND_START)
    REPLY = 3  # a protocol Message answering a STAGE
    NOREPLY = 4  # the party's session answered None (not a dropout, like the in-process driver)
    DROPPED = 5  # the party's session raised ProtocolError / could not train: a dropout
    # server -> party
    WELCOME = 10  # carries the session id in its envelope
    ROUND_START = 11  # round context + global payload
    STAGE = 12  # a protocol Message
    ROUND_END = 13  # the round finished or aborted; drop the party session
    FINAL = 14  # the final global payload
    BYE = 15  # federation finished; close the stream


PARTY_KINDS = frozenset({Kind.HELLO, Kind.READY, Kind.REPLY, Kind.NOREPLY, Kind.DROPPED})
SERVER_KINDS = frozenset({Kind.WELCOME, Kind.ROUND_START, Kind.STAGE, Kind.ROUND_END, Kind.FINAL, Kind.BYE})


class FrameError(Exception):
    """A frame or message broke the envelope rules. `code` names the gRPC status the receiver
    answers with ("INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "PERMISSION_DENIED"); the detail is a
    fixed phrase that never echoes received bytes."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class Frame:
    kind: Kind
    federation_id: bytes
    session: bytes
    round: int
    attempt: int
    step: int
    seq: int
    index: int
    count: int
    total: int
    stage: str
    sender: str
    data: bytes

    def encode(self) -> bytes:
        stage = self.stage.encode("utf-8")
        sender = self.sender.encode("utf-8")
        if len(stage) > MAX_STAGE_BYTES or len(sender) > MAX_SENDER_BYTES:
            raise ValueError("stage or sender name too long for a frame")
        head = _HEADER.pack(
            MAGIC, int(self.kind), 0, self.federation_id, self.session, self.round, self.attempt,
            self.step, self.seq, self.index, self.count, self.total, len(stage), len(sender),
            len(self.data),
        )
        return b"".join((head, stage, sender, self.data))


def valid_sender(name: str) -> bool:
    return bool(_SENDER_RE.match(name))


def decode(raw: bytes, max_chunk: int) -> Frame:
    """Parse one frame; raises FrameError for anything malformed or a chunk above `max_chunk`."""
    if not isinstance(raw, (bytes, bytearray, memoryview)) or len(raw) < HEADER_SIZE:
        raise FrameError("INVALID_ARGUMENT", "malformed frame")
    raw = bytes(raw)
    (magic, kind, flags, fed, session, rnd, attempt, step, seq, index, count, total,
     stage_len, sender_len, data_len) = _HEADER.unpack_from(raw)
    if magic != MAGIC or flags != 0:
        raise FrameError("INVALID_ARGUMENT", "malformed frame")
    if stage_len > MAX_STAGE_BYTES or sender_len > MAX_SENDER_BYTES:
        raise FrameError("INVALID_ARGUMENT", "malformed frame")
    if data_len > max_chunk:
        raise FrameError("RESOURCE_EXHAUSTED", "chunk larger than the federation's chunk size")
    if len(raw) != HEADER_SIZE + stage_len + sender_len + data_len:
        raise FrameError("INVALID_ARGUMENT", "frame length does not match its header")
    try:
        kind = Kind(kind)
        stage = raw[HEADER_SIZE : HEADER_SIZE + stage_len].decode("utf-8")
        sender = raw[HEADER_SIZE + stage_len : HEADER_SIZE + stage_len + sender_len].decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise FrameError("INVALID_ARGUMENT", "malformed frame") from None
    if not valid_sender(sender) or count < 1 or index >= count:
        raise FrameError("INVALID_ARGUMENT", "malformed frame")
    data = raw[HEADER_SIZE + stage_len + sender_len :]
    return Frame(kind, fed, session, rnd, attempt, step, seq, index, count, total, stage, sender, data)
