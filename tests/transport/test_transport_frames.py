"""The envelope and reassembly rules, in process (no sockets)."""

from __future__ import annotations

import os
import random

import pytest

from securefed.transport.assembly import Limits, Reassembler, split
from securefed.transport.frames import NO_SESSION, PARTY_KINDS, Frame, FrameError, Kind, decode

FED = bytes(range(16))
SESSION = bytes(range(16, 32))
LIMITS = Limits(chunk_size=1024, max_message_bytes=10_000)


def frames(seq, data=b"", kind=Kind.REPLY, session=SESSION, sender="p0", **kw):
    return split(kind=kind, federation_id=kw.get("fed", FED), session=session, round=kw.get("round", 3), attempt=1,
                 step=2, seq=seq, stage="plain/input", sender=sender, data=data, limits=LIMITS)


def receiver(session=SESSION):
    return Reassembler(federation_id=FED, sender="p0", allowed=PARTY_KINDS, limits=LIMITS, session=session)


def feed_all(r, raws):
    out = [r.feed(x) for x in raws]
    assert all(o is None for o in out[:-1])
    return out[-1]


@pytest.mark.parametrize("size", [0, 1, 1023, 1024, 1025, 4096, 10_000])
def test_roundtrip_chunked(size):
    data = os.urandom(size)
    raws = frames(1, data)
    assert len(raws) == max(1, -(-size // 1024))
    env = feed_all(receiver(), raws)
    assert (env.kind, env.round, env.attempt, env.step, env.stage, env.sender, env.seq, env.data) == (
        Kind.REPLY, 3, 1, 2, "plain/input", "p0", 1, data)


def test_sequence_must_advance_by_one():
    r = receiver()
    feed_all(r, frames(1, b"a"))
    with pytest.raises(FrameError, match="sequence"):
        r.feed(frames(1, b"a")[0])  # replay
    r = receiver()
    with pytest.raises(FrameError, match="sequence"):
        r.feed(frames(2, b"a")[0])  # gap


@pytest.mark.parametrize(
    "raws, code",
    [
        (lambda: frames(1, fed=bytes(16)), "PERMISSION_DENIED"),
        (lambda: frames(1, sender="p1"), "PERMISSION_DENIED"),
        (lambda: frames(1, session=bytes(16)), "INVALID_ARGUMENT"),
        (lambda: frames(1, kind=Kind.STAGE), "INVALID_ARGUMENT"),  # a server kind from a party
        (lambda: frames(1, kind=Kind.HELLO), "INVALID_ARGUMENT"),  # HELLO only before the session
        (lambda: [b"garbage"], "INVALID_ARGUMENT"),
        (lambda: [frames(1, b"x" * 3000)[1]], "INVALID_ARGUMENT"),  # starts mid-message
        (lambda: [frames(1, b"x" * 3000)[0][:-1]], "INVALID_ARGUMENT"),  # truncated
        (lambda: [frames(1, b"x" * 3000)[0] + b"x"], "INVALID_ARGUMENT"),  # trailing bytes
    ],
)
def test_rejections(raws, code):
    with pytest.raises(FrameError) as e:
        feed_all(receiver(), raws())
    assert e.value.code == code


def test_size_limits():
    big_chunk = Frame(Kind.REPLY, FED, SESSION, 0, 0, 1, 1, 0, 1, 2000, "", "p0", b"x" * 2000).encode()
    with pytest.raises(FrameError) as e:
        receiver().feed(big_chunk)
    assert e.value.code == "RESOURCE_EXHAUSTED"
    huge = Frame(Kind.REPLY, FED, SESSION, 0, 0, 1, 1, 0, 977, 10**6, "", "p0", b"x" * 1024).encode()
    with pytest.raises(FrameError) as e:
        receiver().feed(huge)
    assert e.value.code == "RESOURCE_EXHAUSTED"
    short_chunk = Frame(Kind.REPLY, FED, SESSION, 0, 0, 1, 1, 0, 2, 2000, "", "p0", b"x" * 10).encode()
    with pytest.raises(FrameError):
        receiver().feed(short_chunk)
    with pytest.raises(ValueError):
        frames(1, b"x" * 10_001)


def test_interleaved_messages_rejected():
    a = frames(1, b"a" * 2000)
    b = frames(2, b"b" * 10)
    r = receiver()
    r.feed(a[0])
    with pytest.raises(FrameError, match="pending"):
        r.feed(b[0])


def test_hello_then_session():
    r = receiver(session=None)
    env = r.feed(frames(1, b"1", kind=Kind.HELLO, session=NO_SESSION)[0])
    assert env.kind == Kind.HELLO
    r.bind_session(SESSION)
    assert feed_all(r, frames(2, b"z")).data == b"z"


def test_fuzz_only_frame_errors():
    rnd = random.Random(1)
    good = frames(1, b"payload" * 300)[0]
    for _ in range(2000):
        raw = bytearray(good)
        for _ in range(rnd.randint(1, 6)):
            raw[rnd.randrange(len(raw))] = rnd.randrange(256)
        if rnd.random() < 0.3:
            raw = raw[: rnd.randrange(len(raw))]
        try:
            receiver().feed(bytes(raw))
        except FrameError:
            pass
    with pytest.raises(FrameError):
        decode(b"", 1024)
