"""A malicious secagg server for attack tests: it drives real party sessions (the production
SecAggParty, in process) stage by stage, and may send each party whatever frames it likes.

The honest SecAggServer is used only as a convenience to relay what an attacker would relay
anyway (signed adverts, sealed shares); every deviation is explicit in the test. The attacker holds
the server material (public keys) and, where a test says so, colluding parties' material.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping

import numpy as np

from securefed.protocols.base import Message, PartyInput, ProtocolError, RoundContext
from securefed.protocols.encoding import ring_dtype, unpack_ring
from securefed.protocols.secagg import SecAgg, SecAggConfig, frames, shamir
from securefed.protocols.secagg.frames import Direction, Stage
from securefed.protocols.secagg.primitives import SIG_BYTES, MaskAccumulator, pairwise_seed, x25519_private

STAGE = {s: frames.STAGE_NAMES[s] for s in Stage}


def make_inputs(ids: tuple[str, ...], m: int, seed: int, clip: float = 1.0) -> dict[str, PartyInput]:
    rng = np.random.default_rng(seed)
    return {pid: PartyInput(rng.uniform(-clip / 2, clip / 2, m).astype(np.float32), None, float(1 + i % 4))
            for i, pid in enumerate(ids)}


def context(ids: tuple[str, ...], m: int, round_: int = 1, attempt: int = 0) -> RoundContext:
    return RoundContext("fed-adversarial", round_, ids, m, False, 8, attempt)


@dataclass
class Attempt:
    """One attempt of a round: fresh party sessions over the parties' long-lived material."""

    proto: SecAgg
    ctx: RoundContext
    inputs: Mapping[str, PartyInput]
    server_material: object
    party_material: Mapping[str, object]
    refused: dict[str, str] = field(default_factory=dict)  # pid -> stage at which its session raised

    def __post_init__(self) -> None:
        self.server = self.proto.server(self.ctx, self.server_material)
        self.plan = self.server._plan  # public: every participant derives the same plan
        self.parties = {p: self.proto.party(self.ctx, p, self.inputs[p], self.party_material[p])
                        for p in self.ctx.party_ids}

    def deliver(self, outbound: Mapping[str, Message]) -> dict[str, Message]:
        """Hand each party its message; a party whose session refuses is recorded, not raised."""
        replies = {}
        for pid, msg in outbound.items():
            if pid in self.refused:
                continue
            try:
                reply = self.parties[pid].handle(msg)
            except ProtocolError:
                self.refused[pid] = msg.stage
                continue
            if reply is not None:
                replies[pid] = reply
        return replies

    def forge(self, stage: Stage, pid: str, fields: list[bytes]) -> Message:
        """A server -> party frame with arbitrary fields, correctly framed for this attempt."""
        payload = frames.encode(self.plan.binding, stage, Direction.TO_PARTY, [pid.encode(), *fields])
        return frames.message(stage, payload)

    def fields_to(self, stage: Stage, msg: Message) -> list[bytes]:
        return frames.decode(self.plan.binding, stage, Direction.TO_PARTY, msg.payload)[1:]

    def fields_from(self, stage: Stage, reply: Message) -> list[bytes]:
        return frames.decode(self.plan.binding, stage, Direction.FROM_PARTY, reply.payload[:-SIG_BYTES])[1:]

    def through_share(self, only_from: Mapping[str, set[str]] | None = None) -> dict[str, Message]:
        """Advertise and share honestly; at the masked-input stage party p receives only the shares
        of the senders in only_from[p] (if given). Returns the masked-input replies."""
        adverts = self.deliver(self.server.start())
        self.adverts = {p: self.fields_from(Stage.ADVERTISE, m) for p, m in adverts.items()}
        shares = self.deliver(self.server.step(adverts))
        outbound = self.server.step(shares)
        for pid, keep in (only_from or {}).items():
            items = [it for it in self.fields_to(Stage.MASKED, outbound[pid])
                     if frames.unpack_fields(it, count=2)[0].decode() in keep]
            outbound[pid] = self.forge(Stage.MASKED, pid, items)
        return self.deliver(outbound)

    def consistency(self, views: Mapping[str, tuple[str, ...]]) -> dict[str, Message]:
        """Show each party its own survivor set; returns the signed consistency frames."""
        return self.deliver({p: self.forge(Stage.CONSISTENCY, p, [frames.pack_ids(sorted(s))])
                             for p, s in views.items()})

    def unmask(self, views: Mapping[str, tuple[str, ...]], signatures: Mapping[str, list[bytes]]) -> dict:
        """Ask each responder to unmask view[p], vouched for by signatures[p] (signed frames from
        any attempt). Returns {(owner, kind): {x: y}} of every share revealed."""
        out = {p: self.forge(Stage.UNMASK, p, [frames.pack_ids(sorted(views[p])), *signatures[p]]) for p in views}
        shares: dict[tuple[str, bytes], dict[int, int]] = {}
        for holder, reply in self.deliver(out).items():
            for item in self.fields_from(Stage.UNMASK, reply):
                owner, kind, y = frames.unpack_fields(item, count=3)
                shares.setdefault((owner.decode(), kind), {})[self.plan.share_x(holder)] = shamir.decode_share(y)
        return shares

    def strip(self, target: str, masked: Message, b_seed: bytes, partner_keys: Mapping[str, bytes]) -> np.ndarray:
        """What the attacker recovers of `target`: its masked vector minus its self mask and the
        pairwise masks with the given partners (their s secrets). Decoded as a weighted delta."""
        codec, plan = self.plan.codec, self.plan
        packed = self.fields_from(Stage.MASKED, masked)[0]
        acc = MaskAccumulator(unpack_ring(packed, codec.bits, codec.length).astype(ring_dtype(codec.bits)), codec.bits)
        acc.add_mask(b_seed, -1)
        s_pk_target = self.adverts[target][1]  # (c_pk, s_pk)
        for j, s_raw in partner_keys.items():
            seed = pairwise_seed(x25519_private(s_raw), s_pk_target, plan.binding.salt, plan.index[j], plan.index[target])
            acc.add_mask(seed, -plan.mask_sign(target, j))
        return codec.decode_sum(acc.result()).delta_sum


def new_attempt(proto: SecAgg, base: RoundContext, attempt: int, inputs, sm, pm) -> Attempt:
    return Attempt(proto, replace(base, attempt=attempt), inputs, sm, pm)


def secagg(threshold: int | None = None, **kw) -> SecAgg:
    return SecAgg(SecAggConfig(threshold=threshold, precision_bits=12, **kw))
