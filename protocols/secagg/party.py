"""The party side of secagg as a state machine: one handler per stage, each consuming the server's
frame and returning this party's signed reply. Transport-agnostic: bytes in, bytes out.

Any bad input (wrong stage or round, bad signature or ciphertext, replay, wrong length) raises one
opaque ProtocolError and the session refuses everything afterwards: the carrier then treats this
party as dropped. A party that receives a tampered share from a peer therefore drops itself rather
than quietly excluding the peer: its pairwise masks with that peer are already fixed by the keys it
advertised, and dropped parties are exactly what the protocol recovers from.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from securefed.protocols.base import Message, PartyInput, ProtocolError, RoundContext
from securefed.protocols.secagg import frames, shamir
from securefed.protocols.secagg.config import SecAggConfig
from securefed.protocols.secagg.frames import Direction, Stage
from securefed.protocols.secagg.ledger import RoundLedger
from securefed.protocols.secagg.plan import build_plan
from securefed.protocols.secagg.primitives import (
    KEY_BYTES,
    NONCE_BYTES,
    MaskAccumulator,
    Rng,
    check_x25519_public,
    commit,
    draw,
    ed25519_private,
    open_sealed,
    pairwise_seed,
    prg_reader,
    roster_seed,
    seal,
    share_key,
    x25519_private,
    x25519_public_bytes,
)
from securefed.protocols.secagg.provisioning import PartyMaterial

KIND_SELF_MASK = b"b"  # share of the self-mask seed b_j: revealed for survivors
KIND_PAIRWISE = b"s"  # share of the pairwise-mask key s_j: revealed for dropouts

_NEXT = {Stage.ADVERTISE: Stage.SHARE, Stage.SHARE: Stage.MASKED, Stage.MASKED: Stage.CONSISTENCY,
         Stage.CONSISTENCY: Stage.UNMASK, Stage.UNMASK: None}


def share_aad(salt: bytes, sender: str, recipient: str) -> bytes:
    """AEAD associated data: the round (via its salt) and both party ids."""
    return salt + frames.pack_ids([sender, recipient])


class SecAggParty:
    def __init__(
        self,
        ctx: RoundContext,
        party_id: str,
        data: PartyInput,
        material: PartyMaterial,
        config: SecAggConfig,
        rng: Rng,
        ledger: RoundLedger | None = None,
    ) -> None:
        """ledger: this party's memory of rounds (never unmask a round twice, no rounds backwards);
        None = a private in-memory one, which protects this session only."""
        data.validate(ctx)
        if data.control_delta is not None and not np.all(np.isfinite(data.control_delta)):
            raise ValueError("control_delta has non-finite values")
        if not isinstance(material, PartyMaterial) or material.party_id != party_id:
            raise ValueError("material was provisioned for another party")
        self._plan = build_plan(ctx, config, ctx.roster_seed or roster_seed(material.identity_keys))
        self._ledger = ledger if ledger is not None else RoundLedger()
        if party_id not in self._plan.index:
            raise ValueError(f"party {party_id!r} is not selected for this round")
        self._id = party_id
        self._data = data
        self._rng = rng
        self._sign = ed25519_private(material.signing_key).sign
        self._identity = material.identity_keys
        self._neighbours = self._plan.neighbours(party_id)
        self._expected: Stage | None = Stage.ADVERTISE
        self._handlers: dict[Stage, Callable[[list[bytes]], list[bytes]]] = {
            Stage.ADVERTISE: self._advertise, Stage.SHARE: self._share, Stage.MASKED: self._masked,
            Stage.CONSISTENCY: self._consistency, Stage.UNMASK: self._unmask,
        }
        # round secrets and what this party learned, filled stage by stage
        self._c_raw = self._s_raw = self._b = b""
        self._own_keys: tuple[bytes, bytes] = (b"", b"")  # this attempt's (c_pk, s_pk)
        self._peer_keys: dict[str, tuple[bytes, bytes]] = {}  # live neighbour -> (c_pk, s_pk)
        self._held: dict[str, tuple[bytes, bytes]] = {}  # neighbour -> (s share, b share)
        self._survivors: tuple[str, ...] = ()
        self._revealed: dict[str, bytes] = {}  # peer -> kind revealed (the double-reveal guard)

    @property
    def finished(self) -> bool:
        return self._expected is None

    def handle(self, message: Message) -> Message | None:
        stage = self._expected
        if stage is None:
            raise ProtocolError("invalid message")  # finished or failed: replays are refused
        try:
            payload = frames.payload_of(message, stage)
            fields = frames.decode(self._plan.binding, stage, Direction.TO_PARTY, payload)
            if fields[0] != self._id.encode():
                raise ProtocolError("invalid message")
            reply = self._handlers[stage](fields[1:])
        except ProtocolError:
            self._fail()
            raise
        self._expected = _NEXT[stage]
        if self._expected is None:
            self._forget()
        frame = frames.encode(self._plan.binding, stage, Direction.FROM_PARTY, [self._id.encode(), *reply])
        return frames.message(stage, frames.sign(self._sign, frame))

    # --- stages ---------------------------------------------------------------------------------

    def _advertise(self, rest: list[bytes]) -> list[bytes]:
        if rest:
            raise ProtocolError("invalid message")
        self._ledger.begin(self._plan.ctx.round)
        self._c_raw, self._s_raw = draw(self._rng, KEY_BYTES), draw(self._rng, KEY_BYTES)
        self._own_keys = (x25519_public_bytes(x25519_private(self._c_raw)),
                          x25519_public_bytes(x25519_private(self._s_raw)))
        return list(self._own_keys)

    def _share(self, adverts: list[bytes]) -> list[bytes]:
        plan = self._plan
        seen: set[str] = set()
        for blob in adverts:
            sender, f = frames.open_signed(plan.binding, Stage.ADVERTISE, blob, self._identity, count=3)
            if sender not in self._neighbours or sender in seen:  # seen covers _peer_keys (filled only here)
                raise ProtocolError("invalid message")
            seen.add(sender)
            try:
                self._peer_keys[sender] = (check_x25519_public(f[1]), check_x25519_public(f[2]))
            except ProtocolError:
                continue  # the neighbour signed a low-order or non-canonical key: it is out, not us
        if len(self._peer_keys) < plan.threshold:
            raise ProtocolError("too few live neighbours")
        self._b = draw(self._rng, KEY_BYTES)
        peers = sorted(self._peer_keys)
        xs = [plan.share_x(p) for p in peers]
        s_shares = shamir.split(shamir.secret_to_int(self._s_raw), plan.threshold, xs, self._rng)
        b_shares = shamir.split(shamir.secret_to_int(self._b), plan.threshold, xs, self._rng)
        c_sk, me = x25519_private(self._c_raw), plan.index[self._id]
        out = [commit(self._b, plan.binding.salt)]
        for peer, x in zip(peers, xs):
            key = share_key(c_sk, self._peer_keys[peer][0], plan.binding.salt, me, plan.index[peer])
            plaintext = frames.pack_fields([self._id.encode(), peer.encode(),
                                            shamir.encode_share(s_shares[x]), shamir.encode_share(b_shares[x])])
            sealed = seal(key, draw(self._rng, NONCE_BYTES), plaintext, share_aad(plan.binding.salt, self._id, peer))
            out.append(frames.pack_fields([peer.encode(), sealed]))
        return out

    def _masked(self, sealed_shares: list[bytes]) -> list[bytes]:
        plan = self._plan
        c_sk, me = x25519_private(self._c_raw), plan.index[self._id]
        for item in sealed_shares:
            raw_sender, sealed = frames.unpack_fields(item, count=2)
            sender = frames.party_id(raw_sender, self._peer_keys)
            if sender in self._held:
                raise ProtocolError("invalid message")
            key = share_key(c_sk, self._peer_keys[sender][0], plan.binding.salt, plan.index[sender], me)
            plaintext = open_sealed(key, sealed, share_aad(plan.binding.salt, sender, self._id))
            f = frames.unpack_fields(plaintext, count=4)
            if f[0] != sender.encode() or f[1] != self._id.encode():
                raise ProtocolError("invalid message")
            for share in f[2:]:
                shamir.decode_share(share)  # length and range checks now, not at unmask time
            self._held[sender] = (f[2], f[3])
        if len(self._held) < plan.threshold:
            raise ProtocolError("too few live neighbours")
        codec, data = plan.codec, self._data
        encoded = codec.encode(data.delta, data.control_delta, data.weight, prg_reader(draw(self._rng, KEY_BYTES)))
        acc = MaskAccumulator(encoded, codec.bits, copy=False)  # (L,) in Z_{2^b}
        s_sk = x25519_private(self._s_raw)
        masks = [(self._b, +1)] + [  # exactly the neighbours the server saw share: it can cancel
            (pairwise_seed(s_sk, self._peer_keys[peer][1], plan.binding.salt, me, plan.index[peer]),
             plan.mask_sign(self._id, peer))
            for peer in sorted(self._held)
        ]
        acc.add_masks(masks)
        return [acc.packed()]

    def _consistency(self, rest: list[bytes]) -> list[bytes]:
        if len(rest) != 1:
            raise ProtocolError("invalid message")
        survivors = frames.unpack_ids(rest[0], self._plan.index)
        live = set(survivors)
        # t comes from the invited set's graph (the plan), never from who is left; min_contributors is
        # this party's own floor on the sum's size (sampling.min_round_size): a smaller sum of
        # survivors hides this party's input among too few others.
        if self._id not in live or len(survivors) < max(self._plan.threshold, self._plan.ctx.min_contributors):
            raise ProtocolError("invalid survivor set")
        if not (live & self._neighbours) <= set(self._held):
            raise ProtocolError("invalid survivor set")  # a survivor that never shared with us
        self._survivors = survivors
        return [frames.transcript_digest(self._plan.binding.salt, survivors, *self._own_keys)]

    def _unmask(self, rest: list[bytes]) -> list[bytes]:
        plan = self._plan
        if not rest or frames.unpack_ids(rest[0], plan.index) != self._survivors:
            raise ProtocolError("invalid survivor set")  # not the set we signed
        live, signers = set(self._survivors), set()
        for blob in rest[1:]:
            sender, f = frames.open_signed(plan.binding, Stage.CONSISTENCY, blob, self._identity, count=2)
            if sender not in self._peer_keys or sender not in live or sender in signers:
                raise ProtocolError("invalid message")
            if f[1] != frames.transcript_digest(plan.binding.salt, self._survivors, *self._peer_keys[sender]):
                raise ProtocolError("invalid message")  # signed in another attempt or on another set
            signers.add(sender)
        if len(signers) < plan.threshold:
            raise ProtocolError("too few consistent neighbours")
        self._ledger.claim_unmask(plan.ctx.round)  # persisted before any share leaves
        out = []
        for peer in sorted(self._held):
            kind = KIND_SELF_MASK if peer in live else KIND_PAIRWISE
            out.append(frames.pack_fields([peer.encode(), kind, self._reveal(peer, kind)]))
        return out

    # --- guards ---------------------------------------------------------------------------------

    def _reveal(self, peer: str, kind: bytes) -> bytes:
        """The share of `kind` this party holds for `peer`. Refuses, for good, to reveal the other
        kind for a peer once one was revealed: with both, the server could unmask that peer alone."""
        previous = self._revealed.get(peer)
        if previous is not None and previous != kind:
            self._fail()
            raise ProtocolError("refusing to reveal both shares of one peer")
        if peer not in self._held or kind not in (KIND_SELF_MASK, KIND_PAIRWISE):
            raise ProtocolError("invalid message")
        self._revealed[peer] = kind
        s_share, b_share = self._held[peer]
        return b_share if kind == KIND_SELF_MASK else s_share

    def _fail(self) -> None:
        self._expected = None
        self._forget()

    def _forget(self) -> None:
        # Python cannot wipe memory; dropping the references is what we can do.
        self._c_raw = self._s_raw = self._b = b""
        self._held = {}
