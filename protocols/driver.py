"""In-process carrier: runs one protocol round between sessions in this process, counting bytes,
with optional dropouts at a named stage (for tests and simulations of unreliable parties)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from securefed.protocols.base import (
    AggregationProtocol,
    Message,
    PartyInput,
    ProtocolError,
    RoundContext,
    VectorSum,
)


@dataclass
class RoundTraffic:
    """Bytes each party sent (uploaded) and received over the round."""

    sent: dict[str, int] = field(default_factory=dict)
    received: dict[str, int] = field(default_factory=dict)
    stages: list[str] = field(default_factory=list)


def run_round(
    protocol: AggregationProtocol,
    ctx: RoundContext,
    inputs: Mapping[str, PartyInput],
    server_material: Any,
    party_material: Mapping[str, Any],
    drop_at: Mapping[str, str] | None = None,
    server: Any = None,
) -> tuple[VectorSum, RoundTraffic]:
    """Run one round in process. `drop_at[pid] = stage` makes pid silent from that stage on.
    `server`: a server session the caller made (to read more than the sum from it afterwards).

    A party whose session raises ProtocolError (it received something bad) is treated as dropped,
    exactly as over the network. Raises ProtocolAbort if the server cannot finish.
    """
    drop_at = dict(drop_at or {})
    server = protocol.server(ctx, server_material) if server is None else server
    parties = {pid: protocol.party(ctx, pid, inputs[pid], party_material[pid]) for pid in inputs}
    traffic = RoundTraffic({pid: 0 for pid in ctx.party_ids}, {pid: 0 for pid in ctx.party_ids})
    dropped: set[str] = {pid for pid in ctx.party_ids if pid not in parties}

    def deliver(outbound: Mapping[str, Message]) -> dict[str, Message]:
        replies: dict[str, Message] = {}
        for pid, msg in outbound.items():
            if pid in dropped:
                continue
            if drop_at.get(pid) == msg.stage:
                dropped.add(pid)
                continue
            traffic.received[pid] += len(msg.payload)
            try:
                reply = parties[pid].handle(msg)
            except ProtocolError:
                dropped.add(pid)
                continue
            if reply is not None:
                traffic.sent[pid] += len(reply.payload)
                replies[pid] = reply
        return replies

    traffic.stages = drive(server, deliver)
    return server.result(), traffic


def drive(server: Any, deliver: Callable[[Mapping[str, Message]], Mapping[str, Message]]) -> list[str]:
    """The server's side of a round over any carrier: `deliver` takes one stage's messages and
    returns the replies that came back (a party absent from them dropped). Returns the stage names."""
    stages: list[str] = []
    outbound = server.start()
    while True:
        replies = deliver(outbound)
        if outbound:
            stages.append(next(iter(outbound.values())).stage)
        if server.done:
            break
        outbound = server.step(replies)
        if server.done and not outbound:
            break
    return stages
