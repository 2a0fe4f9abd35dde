"""The aggregation interface every protocol implements (plain, secagg, he).

A round, seen by a protocol:

    server = protocol.server(ctx, server_material)
    parties = {pid: protocol.party(ctx, pid, PartyInput(...), party_material[pid])}
    outbound = server.start()                     # {pid: Message}
    while not server.done:
        replies = {pid: parties[pid].handle(msg) for pid, msg in outbound.items()}   # dropouts: missing
        outbound = server.step(replies)
    vector_sum = server.result()                  # VectorSum: sums only

A party that does not reply to a stage is a dropout from that stage on. Messages are bytes so that
what the simulation exchanges is exactly what travels over the network, and tampering tests can
flip bits in them. Randomness (keys, seeds, masks) enters only through `provision` and the `rng`
arguments; with fixed inputs a protocol is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol

import numpy as np


class ProtocolError(Exception):
    """One opaque error for any protocol failure caused by a peer's message (bad MAC, bad signature,
    wrong length, wrong stage, replay). Deliberately carries no detail about secrets; the server
    treats the sender as dropped."""


class ProtocolAbort(Exception):
    """The round cannot complete (e.g. fewer than the threshold of parties survived). Nothing
    individual was revealed; the runner may retry the round."""


@dataclass(frozen=True)
class RoundContext:
    """Public facts every participant of one round agrees on."""

    federation_id: str
    round: int
    party_ids: tuple[str, ...]  # the parties selected for this round, sorted
    vector_len: int  # m: number of adapter coordinates
    has_control: bool  # SCAFFOLD: a control delta of length m travels too
    max_weight: int  # upper bound on any party's weight (sample count), for fixed-point sizing
    attempt: int = 0  # retry number of this round: protocols bind their transcript to (round, attempt)
    # Floor on the surviving contributor set (sampling.min_round_size). Each side sets it from its own
    # config (securefed.membership), never from the wire; a session refuses a smaller survivor set.
    min_contributors: int = 1
    # The federation's public seed (securefed.membership.federation_seed: the roster and every party's
    # revealed contribution), set by each side from its own kit, never from the wire; b"" in a
    # simulation. secagg draws its neighbour graph from it when set.
    roster_seed: bytes = b""

    def __post_init__(self) -> None:
        if len(set(self.party_ids)) != len(self.party_ids):
            raise ValueError("duplicate party ids in round context")
        if tuple(sorted(self.party_ids)) != self.party_ids:
            raise ValueError("party_ids must be sorted")
        if self.vector_len < 1 or self.max_weight < 1:
            raise ValueError("vector_len and max_weight must be >= 1")
        if self.round < 0 or self.attempt < 0:
            raise ValueError("round and attempt must be >= 0")
        if self.min_contributors < 1:
            raise ValueError("min_contributors must be >= 1")


@dataclass(frozen=True)
class PartyInput:
    """One party's contribution, unweighted; each protocol folds the weight in its own encoding."""

    delta: np.ndarray  # (m,) float32: y_i - x
    control_delta: np.ndarray | None  # (m,) float32: c_i+ - c_i (SCAFFOLD) or None
    weight: float  # sample count w_i > 0

    def validate(self, ctx: RoundContext) -> None:
        if self.delta.shape != (ctx.vector_len,):
            raise ValueError(f"delta has shape {self.delta.shape}, round expects ({ctx.vector_len},)")
        if ctx.has_control != (self.control_delta is not None):
            raise ValueError("control_delta presence does not match the round context")
        if self.control_delta is not None and self.control_delta.shape != (ctx.vector_len,):
            raise ValueError(f"control_delta has shape {self.control_delta.shape}")
        if not (0 < self.weight <= ctx.max_weight):
            raise ValueError(f"weight {self.weight} outside (0, {ctx.max_weight}]")
        if not np.all(np.isfinite(self.delta)):
            raise ValueError("delta has non-finite values")


@dataclass(frozen=True)
class VectorSum:
    """A protocol's output: sums over `contributors` only."""

    delta_sum: np.ndarray  # (m,) float64: sum_i w_i * delta_i
    control_sum: np.ndarray | None  # (m,) float64: sum_i control_delta_i
    total_weight: float
    contributors: tuple[str, ...]
    stats: Mapping[str, Any] = field(default_factory=dict)  # e.g. clipped_fraction, bits


class RoundSpent(ProtocolAbort):
    """The round cannot complete and must not be retried: parties already revealed unmasking
    material for it (secagg parties refuse to unmask a round twice), or its one decryptable
    contributor set cannot be decrypted (threshold he: the retry with that set failed). The runner
    skips the round."""


class SumOutOfRange(RoundSpent):
    """A protocol finished, but its decoded sum cannot come from honest inputs (a party encoded a
    negative or oversized weight, or non-finite values). Only a party can cause this; the round's
    result must not be applied."""


def check_sum(result: VectorSum, ctx: RoundContext, bound: Any = None) -> VectorSum:
    """Raises SumOutOfRange unless `result` is a sum honest parties of `ctx` could produce:
    contributors selected and unique, 0 < total weight <= max_weight x contributors, finite values,
    and, given a `bound` (securefed.robust.bounds.InputBound: the parties' clipping), within what
    clipped inputs can sum to in L-infinity and L2 (`bound.check(result)` raises SumOutOfRange)."""
    n = len(result.contributors)
    if n == 0 or len(set(result.contributors)) != n or not set(result.contributors) <= set(ctx.party_ids):
        raise SumOutOfRange("decoded sum: contributors are not a subset of the selection")
    w = result.total_weight
    if not (np.isfinite(w) and 0 < w <= ctx.max_weight * n):
        raise SumOutOfRange(f"decoded sum: total weight {w!r} outside (0, {ctx.max_weight} x {n}]")
    if result.delta_sum.shape != (ctx.vector_len,) or not np.all(np.isfinite(result.delta_sum)):
        raise SumOutOfRange("decoded sum: delta has the wrong shape or non-finite values")
    if ctx.has_control != (result.control_sum is not None) or (
            result.control_sum is not None and not np.all(np.isfinite(result.control_sum))):
        raise SumOutOfRange("decoded sum: control sum missing, unexpected or non-finite")
    if bound is not None:
        bound.check(result)
    return result


@dataclass(frozen=True)
class Message:
    stage: str
    payload: bytes


class PartySession(Protocol):
    def handle(self, message: Message) -> Message | None:
        """Answer one stage's message; None means this party has nothing to send (e.g. finished)."""


class ServerSession(Protocol):
    @property
    def done(self) -> bool: ...

    def start(self) -> dict[str, Message]:
        """The first stage's messages, one per selected party."""

    def step(self, replies: Mapping[str, Message]) -> dict[str, Message]:
        """Take the replies of the current stage (absent parties dropped); return the next stage's
        messages. Raises ProtocolAbort when the round cannot complete."""

    def result(self) -> VectorSum: ...


class AggregationProtocol(Protocol):
    name: str

    def provision(self, party_ids: tuple[str, ...]) -> tuple[Any, dict[str, Any]]:
        """Long-lived key material, made once per federation from the OS CSPRNG:
        (server_material, {party_id: party_material}). The server's holds no party secret."""

    def party(self, ctx: RoundContext, party_id: str, data: PartyInput, material: Any) -> PartySession: ...

    def server(self, ctx: RoundContext, material: Any) -> ServerSession: ...
