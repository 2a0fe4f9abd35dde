"""The server side of secagg as a state machine over the five stages.

Sets of parties, as in Bonawitz et al.: U1 advertised keys, U2 shared keys, U3 sent masked input
(the survivors, whose sum is the output), U4 signed the survivor set, U5 sent unmasking shares.
Every reply is checked per party (frame, binding, signature, lengths); a bad one raises
ProtocolError, which is caught here and the sender is handled as dropped. After each stage the
live set is pruned to parties with >= t live neighbours, since a party with fewer could never be
unmasked. Before asking anyone to unmask, the server checks that the shares it would get suffice
and aborts otherwise, before any share is revealed. If responders then drop during unmasking
itself, the shares already revealed are of the safe kind only (self-mask seeds of survivors,
pairwise keys of dropouts), which leave every individual input masked.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from securefed.protocols.base import Message, ProtocolAbort, ProtocolError, RoundContext, RoundSpent, VectorSum
from securefed.protocols.encoding import packed_size, ring_dtype, unpack_ring
from securefed.protocols.secagg import frames, shamir
from securefed.protocols.secagg.config import SecAggConfig
from securefed.protocols.secagg.frames import Direction, Stage
from securefed.protocols.secagg.party import KIND_PAIRWISE, KIND_SELF_MASK
from securefed.protocols.secagg.plan import build_plan
from securefed.protocols.secagg.primitives import (
    MaskAccumulator,
    check_x25519_public,
    commit,
    pairwise_seed,
    roster_seed,
    x25519_private,
    x25519_public_bytes,
)
from securefed.protocols.secagg.provisioning import ServerMaterial


class SecAggServer:
    def __init__(self, ctx: RoundContext, material: ServerMaterial, config: SecAggConfig) -> None:
        if not isinstance(material, ServerMaterial) or not set(ctx.party_ids) <= set(material.identity_keys):
            raise ValueError("server material lacks identity keys for some selected parties")
        self._plan = build_plan(ctx, config, ctx.roster_seed or roster_seed(material.identity_keys))
        self._nb = {pid: self._plan.neighbours(pid) for pid in ctx.party_ids}
        self._identity = material.identity_keys
        self._stage: Stage | None = None
        self._result: VectorSum | None = None
        self._handlers: dict[Stage, Callable[[Mapping[str, list[bytes]]], dict[str, Message]]] = {
            Stage.ADVERTISE: self._after_advertise, Stage.SHARE: self._after_share,
            Stage.MASKED: self._after_masked, Stage.CONSISTENCY: self._after_consistency,
            Stage.UNMASK: self._after_unmask,
        }
        self._sent: dict[str, list[bytes]] = {}  # pid -> the fields we sent it this stage
        self._adverts: dict[str, tuple[bytes, bytes, bytes]] = {}  # U1: pid -> (signed frame, c_pk, s_pk)
        self._commits: dict[str, bytes] = {}  # U2: pid -> commitment to its self-mask seed
        self._sealed: dict[str, dict[str, bytes]] = {}  # recipient -> {sender: sealed shares}
        self._u2: frozenset[str] = frozenset()
        self._survivors: tuple[str, ...] = ()  # U3
        self._masked_sum: np.ndarray | None = None  # (L,) sum of U3's masked vectors
        self._signed_sets: dict[str, bytes] = {}  # U4: pid -> its signed consistency frame
        self._raw: dict[str, bytes] = {}  # pid -> its signed reply to the current stage
        self._dropped: dict[str, list[str]] = {}
        self._upload = 0  # bytes of one masked-input reply

    @property
    def done(self) -> bool:
        return self._result is not None

    def start(self) -> dict[str, Message]:
        if self._stage is not None:
            raise ProtocolAbort("round already started")
        return self._send(Stage.ADVERTISE, {pid: [] for pid in self._plan.ctx.party_ids})

    def step(self, replies: Mapping[str, Message]) -> dict[str, Message]:
        stage = self._stage
        if stage is None or self.done:
            raise ProtocolAbort("no stage in progress")
        good: dict[str, list[bytes]] = {}
        self._raw = {}
        for pid in self._sent:
            msg = replies.get(pid)
            try:
                if msg is None:
                    continue
                payload = frames.payload_of(msg, stage)
                sender, fields = frames.open_signed(self._plan.binding, stage, payload, self._identity)
                if sender != pid:
                    raise ProtocolError("invalid message")
                good[pid], self._raw[pid] = fields, payload
            except ProtocolError:
                continue  # handled as dropped
        return self._handlers[stage](good)

    def max_reply_bytes(self) -> int:
        """The largest well-formed reply to the current stage (transport hook: anything bigger is
        dropped before it is buffered). Generous per-item allowances; party ids are <= 64 bytes
        in deployments, far below the 1 KiB allowed per neighbour item."""
        k, slack = self._plan.k, 4096
        if self._stage == Stage.MASKED:
            return packed_size(self._plan.codec.length, self._plan.codec.bits) + slack
        if self._stage in (Stage.SHARE, Stage.UNMASK):
            return slack + 1024 * k
        return slack

    def result(self) -> VectorSum:
        if self._result is None:
            raise ProtocolAbort("round not finished")
        return self._result

    # --- stages ---------------------------------------------------------------------------------

    def _after_advertise(self, good: Mapping[str, list[bytes]]) -> dict[str, Message]:
        for pid, f in good.items():
            try:
                if len(f) == 3:
                    self._adverts[pid] = (self._raw[pid], check_x25519_public(f[1]), check_x25519_public(f[2]))
            except ProtocolError:
                continue  # a low-order or non-canonical key: the party is dropped, nobody else is
        u1 = self._prune(set(self._adverts), Stage.ADVERTISE)
        return self._send(Stage.SHARE, {pid: [self._adverts[j][0] for j in sorted(self._nb[pid] & u1)] for pid in u1})

    def _after_share(self, good: Mapping[str, list[bytes]]) -> dict[str, Message]:
        ok: set[str] = set()
        for pid, f in good.items():
            try:
                expected = self._nb[pid] & set(self._sent)
                if len(f) != 2 + len(expected) or len(f[1]) != 32:
                    raise ProtocolError("invalid message")
                sealed: dict[str, bytes] = {}
                for item in f[2:]:
                    raw, blob = frames.unpack_fields(item, count=2)
                    recipient = frames.party_id(raw, self._plan.index)
                    if recipient not in expected or recipient in sealed:
                        raise ProtocolError("invalid message")
                    sealed[recipient] = blob
            except ProtocolError:
                continue
            self._commits[pid] = f[1]
            for recipient, blob in sealed.items():
                self._sealed.setdefault(recipient, {})[pid] = blob
            ok.add(pid)
        u2 = self._prune(ok, Stage.SHARE)
        self._u2 = frozenset(u2)
        return self._send(Stage.MASKED, {
            pid: [frames.pack_fields([j.encode(), self._sealed[pid][j]]) for j in sorted(self._nb[pid] & u2)]
            for pid in u2
        })

    def _after_masked(self, good: Mapping[str, list[bytes]]) -> dict[str, Message]:
        codec = self._plan.codec
        total = np.zeros(codec.length, dtype=ring_dtype(codec.bits))  # (L,)
        survivors = []
        for pid in sorted(good):
            f = good[pid]
            if len(f) != 2 or len(f[1]) != packed_size(codec.length, codec.bits):
                continue
            try:
                total += unpack_ring(f[1], codec.bits, codec.length).astype(total.dtype)
            except ValueError:
                continue  # non-canonical padding: handled as dropped
            survivors.append(pid)
            self._upload = len(self._raw[pid])
        self._record_drops(Stage.MASKED, set(survivors))
        if len(survivors) < max(self._plan.threshold, self._plan.ctx.min_contributors):
            raise ProtocolAbort("too few parties sent masked input (threshold or min_round_size)")
        self._survivors, self._masked_sum = tuple(survivors), total
        return self._send(Stage.CONSISTENCY, {pid: [frames.pack_ids(survivors)] for pid in survivors})

    def _after_consistency(self, good: Mapping[str, list[bytes]]) -> dict[str, Message]:
        salt = self._plan.binding.salt
        for pid, f in good.items():
            if len(f) == 2 and f[1] == frames.transcript_digest(salt, self._survivors, *self._adverts[pid][1:]):
                self._signed_sets[pid] = self._raw[pid]
        u4 = set(self._signed_sets)
        self._record_drops(Stage.CONSISTENCY, u4)
        # a party unmasks only if >= t neighbours signed the same survivor set
        responders = {pid for pid in u4 if len(self._nb[pid] & u4) >= self._plan.threshold}
        self._check_recoverable(responders)
        ids = frames.pack_ids(self._survivors)
        return self._send(Stage.UNMASK, {
            pid: [ids, *(self._signed_sets[j] for j in sorted(self._nb[pid] & u4))] for pid in sorted(responders)
        })

    def _after_unmask(self, good: Mapping[str, list[bytes]]) -> dict[str, Message]:
        live = set(self._survivors)
        shares: dict[tuple[str, bytes], dict[int, int]] = {}  # (owner, kind) -> {x: y}
        for holder, f in good.items():
            try:
                held = self._nb[holder] & self._u2
                entries: dict[str, tuple[bytes, int]] = {}
                for item in f[1:]:
                    raw, kind, share = frames.unpack_fields(item, count=3)
                    owner = frames.party_id(raw, self._plan.index)
                    wanted = KIND_SELF_MASK if owner in live else KIND_PAIRWISE
                    if owner not in held or owner in entries or kind != wanted:
                        raise ProtocolError("invalid message")
                    entries[owner] = (kind, shamir.decode_share(share))
                if set(entries) != held:
                    raise ProtocolError("invalid message")
            except ProtocolError:
                continue
            for owner, (kind, y) in entries.items():
                shares.setdefault((owner, kind), {})[self._plan.share_x(holder)] = y
        self._record_drops(Stage.UNMASK, set(good))
        self._result = self._unmask(shares)
        return {}

    # --- helpers --------------------------------------------------------------------------------

    def _unmask(self, shares: Mapping[tuple[str, bytes], Mapping[int, int]]) -> VectorSum:
        plan, codec, t = self._plan, self._plan.codec, self._plan.threshold
        acc = MaskAccumulator(self._masked_sum, codec.bits)
        live = set(self._survivors)
        try:
            masks = []  # (key, sign): applied in one chunk-major pass once all are recovered
            for pid in self._survivors:  # remove each survivor's self mask
                b = shamir.int_to_secret(shamir.recover_verified(
                    shares.get((pid, KIND_SELF_MASK), {}), t, lambda v, pid=pid: self._opens_commit(pid, v)))
                masks.append((b, -1))
            for pid in sorted(self._u2 - live):  # cancel what survivors added for dropped neighbours
                partners = sorted(self._nb[pid] & live)
                if not partners:
                    continue
                raw = shamir.int_to_secret(shamir.recover_verified(
                    shares.get((pid, KIND_PAIRWISE), {}), t, lambda v, pid=pid: self._matches_key(pid, v)))
                s_sk = x25519_private(raw)
                for j in partners:
                    seed = pairwise_seed(s_sk, self._adverts[j][2], plan.binding.salt, plan.index[pid], plan.index[j])
                    masks.append((seed, -plan.mask_sign(j, pid)))
        except ProtocolError:
            # a holder lied about a share; the honest ones already revealed only what is safe
            raise RoundSpent("unmasking failed: too few valid shares") from None
        acc.add_masks(masks)
        decoded = codec.decode_sum(acc.result())
        m, n3 = codec.vector_len, len(self._survivors)
        fp32 = 4 * (m * (2 if codec.has_control else 1) + 1)
        stats: dict[str, Any] = {
            "protocol": "secagg",
            "graph": plan.graph_kind, "neighbours": plan.k, "threshold": plan.threshold,
            "bits": codec.bits, "precision_bits": codec.precision_bits,
            "quantization_step": codec.step, "error_bound": codec.error_bound(n3),
            "clipped_fraction": decoded.clipped / (m * n3),
            "control_clipped_fraction": decoded.control_clipped / (m * n3) if codec.has_control else 0.0,
            "masked_upload_bytes": self._upload,
            "upload_expansion_vs_fp32": self._upload / fp32,
            "dropped": {k: tuple(v) for k, v in self._dropped.items()},
            "recovered_dropouts": len(self._u2 - live),
        }
        return VectorSum(decoded.delta_sum, decoded.control_sum, decoded.total_weight, self._survivors, stats)

    def _opens_commit(self, pid: str, value: int) -> bool:
        """Is `value` the self-mask seed pid committed to at share time?"""
        return value < 1 << 256 and commit(shamir.int_to_secret(value), self._plan.binding.salt) == self._commits[pid]

    def _matches_key(self, pid: str, value: int) -> bool:
        """Is `value` the secret of the pairwise public key pid advertised?"""
        if value >= 1 << 256:
            return False
        return x25519_public_bytes(x25519_private(shamir.int_to_secret(value))) == self._adverts[pid][2]

    def _check_recoverable(self, responders: set[str]) -> None:
        t, live = self._plan.threshold, set(self._survivors)
        needs = [pid for pid in self._survivors]
        needs += [pid for pid in self._u2 - live if self._nb[pid] & live]
        if any(len(self._nb[pid] & responders) < t for pid in needs):
            raise ProtocolAbort("too few live neighbours to unmask; nothing was revealed")

    def _prune(self, live: set[str], stage: Stage) -> set[str]:
        """Drop, until stable, parties with fewer than t live neighbours; abort below t parties."""
        t = self._plan.threshold
        while True:
            weak = {pid for pid in live if len(self._nb[pid] & live) < t}
            if not weak:
                break
            live -= weak
        self._record_drops(stage, live)
        if len(live) < t:
            raise ProtocolAbort(f"too few parties survived {frames.STAGE_NAMES[stage]}")
        return live

    def _record_drops(self, stage: Stage, live: set[str]) -> None:
        lost = sorted(set(self._sent) - live)
        if lost:
            self._dropped[frames.STAGE_NAMES[stage]] = lost

    def _send(self, stage: Stage, fields: Mapping[str, list[bytes]]) -> dict[str, Message]:
        self._stage, self._sent = stage, dict(fields)
        return {
            pid: frames.message(stage, frames.encode(self._plan.binding, stage, Direction.TO_PARTY, [pid.encode(), *f]))
            for pid, f in fields.items()
        }
