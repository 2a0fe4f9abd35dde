"""What every participant of a round derives from public facts alone: the round binding, the
neighbour graph, k and t, and the fixed-point codec. Party and server build the same plan."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Mapping

from securefed.protocols.base import RoundContext
from securefed.protocols.encoding import FixedPointCodec
from securefed.protocols.secagg import graph
from securefed.protocols.secagg.config import SecAggConfig
from securefed.protocols.secagg.frames import Binding
from securefed.protocols.secagg.primitives import attempt_salt, round_salt


@dataclass(frozen=True)
class RoundPlan:
    ctx: RoundContext
    binding: Binding
    graph_kind: str  # "complete" or "sparse"
    k: int  # neighbours per party
    threshold: int  # t: shares needed to reconstruct
    index: Mapping[str, int]  # party id -> position in ctx.party_ids
    neighbour_index: tuple[frozenset[int], ...]  # by position
    codec: FixedPointCodec

    def neighbours(self, pid: str) -> frozenset[str]:
        ids = self.ctx.party_ids
        return frozenset(ids[j] for j in self.neighbour_index[self.index[pid]])

    def share_x(self, pid: str) -> int:
        """Shamir x-coordinate of the share a party holds: its 1-based index (never 0)."""
        return self.index[pid] + 1

    def mask_sign(self, own: str, peer: str) -> int:
        """+1 if `own` adds the pairwise mask of edge {own, peer}, -1 if it subtracts it."""
        return 1 if self.index[own] < self.index[peer] else -1


@functools.lru_cache(maxsize=8)
def build_plan(ctx: RoundContext, config: SecAggConfig, seed: bytes) -> RoundPlan:
    """`seed`: the roster seed (a deployment's ctx.roster_seed, which mixes every party's revealed
    contribution; else primitives.roster_seed of the pinned identity keys).
    Raises ValueError (naming the field) when the config cannot serve this round.
    Cached: a simulated round builds one plan per party from identical public inputs."""
    n = len(ctx.party_ids)
    kind, k, t = config.resolve(n)
    salt = attempt_salt(round_salt(ctx.federation_id, ctx.round), ctx.attempt)
    sets = graph.ring(graph.round_order(ctx.party_ids, seed, ctx.round), k)
    codec = FixedPointCodec.for_round(
        n, ctx.vector_len, ctx.has_control, ctx.max_weight, config.clip, config.control_clip, config.precision_bits
    )
    index = {pid: i for i, pid in enumerate(ctx.party_ids)}
    return RoundPlan(ctx, Binding(ctx.round, salt), kind, k, t, index, sets, codec)
