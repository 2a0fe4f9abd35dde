"""Byte framing of secagg messages: explicit, length-checked, no pickle.

    frame  = header | fields
    header = magic "SAG1" | version u8 | stage u8 | direction u8 | pad u8 | round u64 | round salt (32)
    fields = count u32 | (length u64 | bytes) * count

The round salt is SHA-256 over (federation id, round), so every frame is bound to its federation,
round and stage; a frame from another round, stage or direction fails to decode. Field 0 is always
a party id: the recipient for server -> party frames, the sender for party -> server frames.
Party frames are signed: `signed = frame | Ed25519(frame)`, so the server (and peers, for relayed
frames) can check who sent what; the server holds no signing key, its frames are checked through
the party-signed or AEAD-sealed content they carry.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Callable, Mapping, Sequence

from securefed.protocols.base import Message, ProtocolError
from securefed.protocols.secagg.primitives import SIG_BYTES, verify_signature

MAGIC = b"SAG1"
VERSION = 1
_HEADER = struct.Struct("<4sBBBxQ32s")
_COUNT = struct.Struct("<I")
_LEN = struct.Struct("<Q")

SignFn = Callable[[bytes], bytes]


class Stage(IntEnum):
    ADVERTISE = 1
    SHARE = 2
    MASKED = 3
    CONSISTENCY = 4
    UNMASK = 5


STAGE_NAMES = {
    Stage.ADVERTISE: "secagg/advertise-keys",
    Stage.SHARE: "secagg/share-keys",
    Stage.MASKED: "secagg/masked-input",
    Stage.CONSISTENCY: "secagg/consistency-check",
    Stage.UNMASK: "secagg/unmask",
}


class Direction(IntEnum):
    TO_PARTY = 0
    FROM_PARTY = 1


@dataclass(frozen=True)
class Binding:
    round: int
    salt: bytes  # attempt_salt(round_salt(federation id, round), attempt): names one attempt


def pack_fields(fields: Sequence[bytes]) -> bytes:
    out = [_COUNT.pack(len(fields))]
    for f in fields:
        out.append(_LEN.pack(len(f)))
        out.append(bytes(f))
    return b"".join(out)


def unpack_fields(data: bytes, count: int | None = None, min_count: int = 0) -> list[bytes]:
    """Raises ProtocolError unless data is exactly a field list (of `count` fields if given)."""
    if len(data) < _COUNT.size:
        raise ProtocolError("invalid message")
    (n,) = _COUNT.unpack_from(data)
    if (count is not None and n != count) or n < min_count or n * _LEN.size > len(data):
        raise ProtocolError("invalid message")
    fields, pos = [], _COUNT.size
    for _ in range(n):
        if pos + _LEN.size > len(data):
            raise ProtocolError("invalid message")
        (length,) = _LEN.unpack_from(data, pos)
        pos += _LEN.size
        if length > len(data) - pos:
            raise ProtocolError("invalid message")
        fields.append(data[pos : pos + length])
        pos += length
    if pos != len(data):
        raise ProtocolError("invalid message")
    return fields


def encode(binding: Binding, stage: Stage, direction: Direction, fields: Sequence[bytes]) -> bytes:
    header = _HEADER.pack(MAGIC, VERSION, stage, direction, binding.round, binding.salt)
    return header + pack_fields(fields)


def decode(
    binding: Binding, stage: Stage, direction: Direction, frame: bytes, count: int | None = None, min_count: int = 1
) -> list[bytes]:
    if len(frame) < _HEADER.size:
        raise ProtocolError("invalid message")
    magic, version, got_stage, got_dir, round_, salt = _HEADER.unpack_from(frame)
    if (magic, version, got_stage, got_dir, round_, salt) != (
        MAGIC, VERSION, stage, direction, binding.round, binding.salt
    ):
        raise ProtocolError("invalid message")
    return unpack_fields(frame[_HEADER.size :], count, min_count)


def sign(sign_fn: SignFn, frame: bytes) -> bytes:
    return frame + sign_fn(frame)


def open_signed(
    binding: Binding,
    stage: Stage,
    signed: bytes,
    identity_keys: Mapping[str, bytes],
    count: int | None = None,
    min_count: int = 1,
) -> tuple[str, list[bytes]]:
    """Decode a party's signed frame and check the signature of the party named in field 0.
    Returns (sender, fields). Raises ProtocolError on anything wrong."""
    if len(signed) < SIG_BYTES:
        raise ProtocolError("invalid message")
    frame, sig = signed[:-SIG_BYTES], signed[-SIG_BYTES:]
    fields = decode(binding, stage, Direction.FROM_PARTY, frame, count, min_count)
    sender = party_id(fields[0], identity_keys)
    verify_signature(identity_keys[sender], sig, frame)
    return sender, fields


def party_id(raw: bytes, known: Mapping[str, object]) -> str:
    try:
        pid = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("invalid message") from None
    if pid not in known:
        raise ProtocolError("invalid message")
    return pid


def message(stage: Stage, payload: bytes) -> Message:
    return Message(STAGE_NAMES[stage], payload)


def payload_of(msg: Message, stage: Stage) -> bytes:
    if not isinstance(msg, Message) or msg.stage != STAGE_NAMES[stage] or not isinstance(msg.payload, bytes):
        raise ProtocolError("invalid message")
    return msg.payload



def pack_ids(ids: Sequence[str]) -> bytes:
    return pack_fields([pid.encode() for pid in ids])


def unpack_ids(data: bytes, known: Mapping[str, object]) -> tuple[str, ...]:
    """A canonical id list: known ids, strictly increasing (so each set has one encoding)."""
    ids = tuple(party_id(raw, known) for raw in unpack_fields(data))
    if any(a >= b for a, b in zip(ids, ids[1:])):
        raise ProtocolError("invalid message")
    return ids


def transcript_digest(salt: bytes, survivors: Sequence[str], c_pk: bytes, s_pk: bytes) -> bytes:
    """What a consistency signature covers: the attempt (its salt names federation, round and
    attempt), the survivor set, and the signer's own fresh keys of this attempt. A verifier checks
    it against the keys the signer advertised to it in this session, so a signature made in any
    other attempt (other keys) or on any other set does not verify."""
    return hashlib.sha256(b"securefed/secagg/v2/consistency" + salt + pack_ids(survivors)
                          + pack_fields([c_pk, s_pk])).digest()
