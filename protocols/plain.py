"""`plain`: parties send their update in the clear; the server sums. No secrecy, the reference
against which secagg and he are checked.

Message: w (float64) | [delta (m) | control (m, if any)] at the party's own precision. Adapters
train in float32, so a party sends float32 (4 bytes a value, as the in-the-clear baseline counts
them) and the server folds the weight in and sums in float64: no precision lost to the wire. An input
already in float64 (the integer carrier of user-level distributed DP) travels as float64."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from securefed.protocols.base import (
    Message,
    PartyInput,
    ProtocolAbort,
    ProtocolError,
    RoundContext,
    VectorSum,
)
from securefed.protocols.registry import register
from securefed.protocols.wire import pack_vector, unpack_vector

STAGE = "plain/input"
_WEIGHT = struct.Struct("<d")


def _length(ctx: RoundContext) -> int:
    return ctx.vector_len * (2 if ctx.has_control else 1)


@dataclass
class PlainParty:
    ctx: RoundContext
    party_id: str
    data: PartyInput

    def __post_init__(self) -> None:
        self.data.validate(self.ctx)

    def handle(self, message: Message) -> Message | None:
        if message.stage != STAGE:
            raise ProtocolError("unexpected stage")
        parts = [self.data.delta] + ([self.data.control_delta] if self.ctx.has_control else [])
        wide = any(p.dtype != np.float32 for p in parts)
        vector = pack_vector(np.concatenate(parts), "<f8" if wide else "<f4")
        return Message(STAGE, _WEIGHT.pack(float(self.data.weight)) + vector)


@dataclass(frozen=True)
class StackedUpdates:
    """The round's individual updates, which only this protocol's server ever holds (secagg and he
    show sums only): the input of a Byzantine-robust rule (securefed.robust.stacked), which turns it
    into a VectorSum before the algorithm's Aggregate is built."""

    deltas: np.ndarray  # (n, m) float64, unweighted delta_i
    controls: np.ndarray | None  # (n, m) float64 control deltas (SCAFFOLD) or None
    weights: np.ndarray  # (n,) float64 w_i
    contributors: tuple[str, ...]  # row order


@dataclass
class PlainServer:
    ctx: RoundContext
    keep_updates: bool = False  # keep every row for stacked(): only a robust rule asks (n x m memory)
    _result: VectorSum | None = field(default=None, init=False)
    _rows: list[tuple[np.ndarray, float]] = field(default_factory=list, init=False)

    @property
    def done(self) -> bool:
        return self._result is not None

    def start(self) -> dict[str, Message]:
        return {pid: Message(STAGE, b"") for pid in self.ctx.party_ids}

    def step(self, replies: Mapping[str, Message]) -> dict[str, Message]:
        m, total, total_weight, contributors = self.ctx.vector_len, np.zeros(_length(self.ctx)), 0.0, []
        for pid in self.ctx.party_ids:
            msg = replies.get(pid)
            if msg is None:
                continue
            try:
                if msg.stage != STAGE or len(msg.payload) < _WEIGHT.size:
                    raise ProtocolError("unexpected stage")
                (w,) = _WEIGHT.unpack_from(msg.payload)
                if not (0 < w <= self.ctx.max_weight):  # also false for NaN
                    raise ProtocolError("malformed message")
                v = unpack_vector(msg.payload[_WEIGHT.size :], _length(self.ctx))
            except ProtocolError:
                continue  # treated as dropped
            if self.keep_updates:
                self._rows.append((v, w))
            total[:m] += w * v[:m]  # float64 sum of w_i * delta_i
            total[m:] += v[m:]  # control deltas are summed unweighted
            total_weight += w
            contributors.append(pid)
        if not contributors:
            raise ProtocolAbort("no party contributed to the round")
        control = total[m : 2 * m] if self.ctx.has_control else None
        self._result = VectorSum(total[:m], control, total_weight, tuple(contributors))
        return {}

    def result(self) -> VectorSum:
        if self._result is None:
            raise ProtocolAbort("round not finished")
        return self._result

    def stacked(self) -> StackedUpdates:
        if self._result is None or not self.keep_updates:
            raise ProtocolAbort("round not finished, or updates were not kept")
        m = self.ctx.vector_len
        rows = np.stack([v for v, _ in self._rows]).astype(np.float64)  # (n, m or 2m)
        controls = rows[:, m:] if self.ctx.has_control else None
        return StackedUpdates(rows[:, :m], controls, np.array([w for _, w in self._rows]), self._result.contributors)


class Plain:
    name = "plain"

    def __init__(self, config: Any = None) -> None:
        self.config = config

    def provision(self, party_ids: tuple[str, ...]) -> tuple[Any, dict[str, Any]]:
        return None, {pid: None for pid in party_ids}

    def party(self, ctx: RoundContext, party_id: str, data: PartyInput, material: Any) -> PlainParty:
        return PlainParty(ctx, party_id, data)

    def server(self, ctx: RoundContext, material: Any, keep_updates: bool = False) -> PlainServer:
        return PlainServer(ctx, keep_updates)


register("plain", Plain)
