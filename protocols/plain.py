"""`plain`: parties send w_i * delta_i in the clear; the server sums. No secrecy, the reference
against which secagg and he are checked. Vector layout: [w*delta (m) | control (m, if any) | w]."""

from __future__ import annotations

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
from securefed.protocols.wire import pack_f64, unpack_f64

STAGE = "plain/input"


def _length(ctx: RoundContext) -> int:
    return ctx.vector_len * (2 if ctx.has_control else 1) + 1


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
        w = float(self.data.weight)
        parts = [w * self.data.delta.astype(np.float64)]
        if self.ctx.has_control:
            parts.append(self.data.control_delta.astype(np.float64))
        parts.append(np.array([w]))
        return Message(STAGE, pack_f64(np.concatenate(parts)))


@dataclass
class PlainServer:
    ctx: RoundContext
    _result: VectorSum | None = field(default=None, init=False)

    @property
    def done(self) -> bool:
        return self._result is not None

    def start(self) -> dict[str, Message]:
        return {pid: Message(STAGE, b"") for pid in self.ctx.party_ids}

    def step(self, replies: Mapping[str, Message]) -> dict[str, Message]:
        m, total, contributors = self.ctx.vector_len, np.zeros(_length(self.ctx)), []
        for pid in self.ctx.party_ids:
            msg = replies.get(pid)
            if msg is None:
                continue
            try:
                if msg.stage != STAGE:
                    raise ProtocolError("unexpected stage")
                v = unpack_f64(msg.payload, _length(self.ctx))
                if not (0 < v[-1] <= self.ctx.max_weight):
                    raise ProtocolError("malformed message")
            except ProtocolError:
                continue  # treated as dropped
            total += v
            contributors.append(pid)
        if not contributors:
            raise ProtocolAbort("no party contributed to the round")
        control = total[m : 2 * m] if self.ctx.has_control else None
        self._result = VectorSum(total[:m], control, float(total[-1]), tuple(contributors))
        return {}

    def result(self) -> VectorSum:
        if self._result is None:
            raise ProtocolAbort("round not finished")
        return self._result


class Plain:
    name = "plain"

    def __init__(self, config: Any = None) -> None:
        self.config = config

    def provision(self, party_ids: tuple[str, ...]) -> tuple[Any, dict[str, Any]]:
        return None, {pid: None for pid in party_ids}

    def party(self, ctx: RoundContext, party_id: str, data: PartyInput, material: Any) -> PlainParty:
        return PlainParty(ctx, party_id, data)

    def server(self, ctx: RoundContext, material: Any) -> PlainServer:
        return PlainServer(ctx)


register("plain", Plain)
