"""Payloads of the control messages (ROUND_START, ROUND_END): strict JSON inside the binary envelope.

JSON is parsed, never evaluated, and every field is type-checked; RoundContext re-validates itself.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from securefed.protocols.base import RoundContext

_LEN = struct.Struct("<I")
MAX_CONTEXT_BYTES = 1 << 20


class WireError(ValueError):
    """A control payload from the peer is malformed."""


def encode_round_start(ctx: RoundContext, global_payload: bytes) -> bytes:
    head = json.dumps({
        "federation_id": ctx.federation_id, "round": ctx.round, "party_ids": list(ctx.party_ids),
        "vector_len": ctx.vector_len, "has_control": ctx.has_control, "max_weight": ctx.max_weight,
    }, sort_keys=True).encode()
    return _LEN.pack(len(head)) + head + global_payload


def _typed(d: dict[str, Any], key: str, typ: type) -> Any:
    v = d.get(key)
    if not isinstance(v, typ) or (typ is int and isinstance(v, bool)):
        raise WireError(f"round context field {key} malformed")
    return v


def decode_round_start(data: bytes) -> tuple[RoundContext, bytes]:
    if len(data) < _LEN.size:
        raise WireError("round start too short")
    (n,) = _LEN.unpack_from(data)
    if n > MAX_CONTEXT_BYTES or len(data) < _LEN.size + n:
        raise WireError("round start length mismatch")
    try:
        d = json.loads(data[_LEN.size : _LEN.size + n])
    except ValueError:
        raise WireError("round context is not JSON") from None
    if not isinstance(d, dict) or set(d) != {"federation_id", "round", "party_ids", "vector_len", "has_control", "max_weight"}:
        raise WireError("round context fields malformed")
    ids = _typed(d, "party_ids", list)
    if not all(isinstance(p, str) for p in ids):
        raise WireError("round context field party_ids malformed")
    try:
        ctx = RoundContext(
            federation_id=_typed(d, "federation_id", str), round=_typed(d, "round", int),
            party_ids=tuple(ids), vector_len=_typed(d, "vector_len", int),
            has_control=_typed(d, "has_control", bool), max_weight=_typed(d, "max_weight", int),
        )
    except ValueError as e:
        raise WireError(str(e)) from None
    return ctx, data[_LEN.size + n :]


def encode_round_end(status: str) -> bytes:
    return json.dumps({"status": status}).encode()


def decode_round_end(data: bytes) -> str:
    try:
        d = json.loads(data)
    except ValueError:
        raise WireError("round end is not JSON") from None
    if not isinstance(d, dict) or not isinstance(d.get("status"), str):
        raise WireError("round end malformed")
    return d["status"]
