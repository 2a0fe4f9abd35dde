"""Splitting a logical message into frames, and putting frames back together with every check.

The receiver of one stream keeps one Reassembler. It enforces, per frame: federation id, session id,
sender (= the authenticated identity), allowed kinds, chunk size, declared total against the
federation's max message size, and the sequence number: each new message must carry exactly
last + 1, so a replayed, dropped or reordered message is rejected rather than silently applied.
Chunks of one message must arrive in order and agree on every envelope field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

from securefed.transport.frames import (
    HEADER_SIZE,
    MAX_SENDER_BYTES,
    MAX_STAGE_BYTES,
    NO_SESSION,
    Frame,
    FrameError,
    Kind,
    decode,
)


@dataclass(frozen=True)
class Limits:
    chunk_size: int  # data bytes per frame (all but the last chunk carry exactly this many)
    max_message_bytes: int  # total data bytes of one logical message

    def __post_init__(self) -> None:
        if self.chunk_size < 1024 or self.max_message_bytes < 1:
            raise ValueError("chunk_size must be >= 1024 and max_message_bytes >= 1")


@dataclass(frozen=True)
class Envelope:
    """One whole logical message, after reassembly."""

    kind: Kind
    round: int
    attempt: int
    step: int
    stage: str
    sender: str
    seq: int
    data: bytes


def chunk_count(total: int, chunk_size: int) -> int:
    return max(1, -(-total // chunk_size))


@dataclass(frozen=True)
class Outgoing:
    """One message waiting in a send queue. Frames are cut from `data` only when the stream is
    ready for them, so a large payload broadcast to many parties is held once, not once per
    party and frame. Raises ValueError if `data` is above the max message size: the sender
    refuses to produce what the receiver must reject."""

    kind: Kind
    federation_id: bytes
    session: bytes
    round: int
    attempt: int
    step: int
    seq: int
    stage: str
    sender: str
    data: bytes
    limits: Limits

    def __post_init__(self) -> None:
        if len(self.data) > self.limits.max_message_bytes:
            raise ValueError(
                f"message of {len(self.data)} bytes exceeds max_message_bytes={self.limits.max_message_bytes}")
        if len(self.stage.encode()) > MAX_STAGE_BYTES or len(self.sender.encode()) > MAX_SENDER_BYTES:
            raise ValueError("stage or sender name too long for a frame")

    @property
    def count(self) -> int:
        return chunk_count(len(self.data), self.limits.chunk_size)

    def wire_size(self) -> int:
        return len(self.data) + self.count * (HEADER_SIZE + len(self.stage.encode()) + len(self.sender.encode()))

    def frames(self) -> Iterator[bytes]:
        c, view = self.limits.chunk_size, memoryview(self.data)
        for i in range(self.count):
            yield Frame(self.kind, self.federation_id, self.session, self.round, self.attempt, self.step, self.seq,
                        i, self.count, len(self.data), self.stage, self.sender, bytes(view[i * c : (i + 1) * c])).encode()


def split(
    *,
    kind: Kind,
    federation_id: bytes,
    session: bytes,
    round: int,
    attempt: int,
    step: int,
    seq: int,
    stage: str,
    sender: str,
    data: bytes,
    limits: Limits,
) -> list[bytes]:
    """All frames of one message at once (tests, tools); senders queue `Outgoing` instead."""
    return list(Outgoing(kind, federation_id, session, round, attempt, step, seq, stage, sender, data, limits).frames())


@dataclass
class _Pending:
    first: Frame
    next_index: int
    parts: list[bytes] = field(default_factory=list)
    size: int = 0
    discard: bool = False  # over the receiver's budget: checked chunk by chunk, never stored


# The receiver's budget for a message, asked at its first chunk: the most bytes it will buffer.
Budget = Callable[[Frame], int]


class Reassembler:
    """Checks and reassembles the frames of one direction of one stream."""

    def __init__(
        self,
        *,
        federation_id: bytes,
        sender: str,
        allowed: frozenset[Kind],
        limits: Limits,
        session: bytes | None = None,
        budget: Budget | None = None,
    ) -> None:
        """budget: bytes this receiver will buffer for a message, decided at its first chunk from
        what it expects (e.g. the current stage's largest reply); a larger message is still checked
        frame by frame but its data is dropped, and it is counted in `discarded`, never delivered.
        None: max_message_bytes."""
        self._budget = budget
        self.discarded = 0
        self._fed = federation_id
        self._sender = sender
        self._allowed = allowed
        self._limits = limits
        self._session = session  # None until the HELLO/WELCOME exchange fixed it
        self._last_seq = 0
        self._pending: _Pending | None = None

    def bind_session(self, session: bytes) -> None:
        self._session = session

    def feed(self, raw: bytes) -> Envelope | None:
        """Take one frame; return the message it completes, None if more chunks are due."""
        f = decode(raw, self._limits.chunk_size)
        if f.federation_id != self._fed:
            raise FrameError("PERMISSION_DENIED", "frame is bound to another federation")
        if f.sender != self._sender:
            raise FrameError("PERMISSION_DENIED", "frame sender does not match the authenticated peer")
        if f.kind not in self._allowed:
            raise FrameError("INVALID_ARGUMENT", "frame kind not allowed in this direction")
        expected_session = NO_SESSION if self._session is None else self._session
        if f.session != expected_session or (self._session is None) != (f.kind == Kind.HELLO):
            raise FrameError("INVALID_ARGUMENT", "frame is bound to another session")
        if f.total > self._limits.max_message_bytes:
            raise FrameError("RESOURCE_EXHAUSTED", "message larger than max_message_bytes")
        if f.count != chunk_count(f.total, self._limits.chunk_size):
            raise FrameError("INVALID_ARGUMENT", "chunk count does not match the message length")
        p = self._pending
        if p is None:
            if f.index != 0:
                raise FrameError("INVALID_ARGUMENT", "message does not start at chunk 0")
            if f.seq != self._last_seq + 1:
                raise FrameError("INVALID_ARGUMENT", "replayed or out-of-order sequence number")
            over = self._budget is not None and f.total > self._budget(f)
            p = self._pending = _Pending(f, 0, discard=over)
        else:
            a = p.first
            same = (a.kind, a.round, a.attempt, a.step, a.seq, a.count, a.total, a.stage) == (
                f.kind, f.round, f.attempt, f.step, f.seq, f.count, f.total, f.stage)
            if not same or f.index != p.next_index:
                raise FrameError("INVALID_ARGUMENT", "chunk does not continue the pending message")
        last = f.index == f.count - 1
        # Every chunk but the last is exactly chunk_size: the receiver's buffer can never exceed
        # the declared total, whatever the peer sends.
        want = f.total - f.index * self._limits.chunk_size if last else self._limits.chunk_size
        if len(f.data) != want:
            raise FrameError("INVALID_ARGUMENT", "chunk length does not match the message length")
        if not p.discard:
            p.parts.append(f.data)
            p.size += len(f.data)
        p.next_index += 1
        if not last:
            return None
        self._pending = None
        self._last_seq = f.seq
        if p.discard:
            self.discarded += 1
            return None
        a = p.first
        return Envelope(a.kind, a.round, a.attempt, a.step, a.stage, a.sender, a.seq, b"".join(p.parts))
