"""Malicious parties and a malicious relay: low-order / non-canonical keys, bad Shamir shares, keys
substituted from another attempt. Each was either a crash of every honest neighbour or an abort of
the round on the v1 code (noted per test); now the bad actor is out and the round gives the exact
sum of the others."""

from __future__ import annotations

import numpy as np
import pytest

from securefed.protocols.base import Message, ProtocolAbort, ProtocolError
from securefed.protocols.driver import run_round
from securefed.protocols.secagg import SecAgg, frames, shamir
from securefed.protocols.secagg.frames import Direction, Stage
from securefed.protocols.secagg import primitives
from securefed.protocols.secagg.primitives import SIG_BYTES, ed25519_private

from _harness import STAGE, context, make_inputs, new_attempt, secagg

IDS = tuple(f"p{i}" for i in range(7))
P = 2**255 - 19
LOW_ORDER = [bytes(32), (1).to_bytes(32, "little"), (P - 1).to_bytes(32, "little"),
             bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")]
NON_CANONICAL = [(P + 9).to_bytes(32, "little"), (2**255 - 1).to_bytes(32, "little")]


class Evil(SecAgg):
    """A SecAgg whose session for `bad` party is replaced by `behave(session, msg, sign) -> Message`."""

    def __init__(self, bad: str, behave, **kw) -> None:
        super().__init__(secagg(**kw).config)
        self.bad, self.behave = bad, behave

    def party(self, ctx, party_id, data, material):
        session = super().party(ctx, party_id, data, material)
        if party_id != self.bad:
            return session
        sign = ed25519_private(material.signing_key).sign
        behave = self.behave

        class _Session:
            def handle(self, msg: Message) -> Message:
                return behave(session, msg, sign)
        return _Session()


def _resign(msg: Message, stage: Stage, binding, sign, fields: list[bytes]) -> Message:
    return frames.message(stage, frames.sign(sign, frames.encode(binding, stage, Direction.FROM_PARTY, fields)))


def _exact(inputs, contributors):
    return sum(inputs[p].weight * inputs[p].delta.astype(np.float64) for p in contributors)


@pytest.mark.parametrize("key", LOW_ORDER + NON_CANONICAL)
def test_low_order_and_non_canonical_keys_are_refused(key: bytes) -> None:
    with pytest.raises(ProtocolError):
        primitives.check_x25519_public(key)


def test_party_advertising_a_low_order_key_is_dropped_alone() -> None:
    """v1: every honest neighbour raised on the all-zero agreement and dropped itself; the round
    aborted. Now the server drops the advertiser and the others' sum is exact."""
    def zero_keys(session, msg, sign):
        reply = session.handle(msg)
        if msg.stage != STAGE[Stage.ADVERTISE]:
            return reply
        binding = session._plan.binding
        return _resign(reply, Stage.ADVERTISE, binding, sign, [b"p6", bytes(32), bytes(32)])

    proto = Evil("p6", zero_keys)
    sm, pm = proto.provision(IDS)
    inputs = make_inputs(IDS, m=32, seed=5)
    ctx = context(IDS, m=32)
    got, _ = run_round(proto, ctx, inputs, sm, pm)
    assert got.contributors == IDS[:-1]
    bound = (len(IDS) - 1) * 1.0 / 2**12
    assert np.abs(got.delta_sum - _exact(inputs, IDS[:-1])).max() <= bound


def test_relayed_low_order_key_is_skipped_not_fatal() -> None:
    """A malicious server relays the low-order advert anyway: the honest party leaves that
    neighbour out and goes on (v1: it raised and was out of the round)."""
    proto = secagg()
    sm, pm = proto.provision(IDS)
    att = new_attempt(proto, context(IDS, m=16), 0, make_inputs(IDS, 16, 1), sm, pm)
    adverts = att.deliver(att.server.start())
    sign6 = ed25519_private(pm["p6"].signing_key).sign
    bad = _resign(adverts["p6"], Stage.ADVERTISE, att.plan.binding, sign6, [b"p6", bytes(32), bytes(32)])
    relayed = [adverts[p].payload for p in IDS if p not in ("p0", "p6")] + [bad.payload]
    reply = att.deliver({"p0": att.forge(Stage.SHARE, "p0", relayed)})
    assert "p0" not in att.refused
    recipients = {frames.unpack_fields(it, count=2)[0] for it in att.fields_from(Stage.SHARE, reply["p0"])[1:]}
    assert b"p6" not in recipients and len(recipients) == len(IDS) - 2


def test_one_bad_share_does_not_abort_the_round() -> None:
    """A colluding holder reveals a wrong share at unmask. v1: the reconstruction with the t
    smallest x failed the commitment and the round aborted. Now the server finds t good shares."""
    def lie(session, msg, sign):
        reply = session.handle(msg)
        if msg.stage != STAGE[Stage.UNMASK]:
            return reply
        binding = session._plan.binding
        fields = frames.decode(binding, Stage.UNMASK, Direction.FROM_PARTY, reply.payload[:-SIG_BYTES])
        owner, kind, y = frames.unpack_fields(fields[1], count=3)
        wrong = shamir.encode_share((shamir.decode_share(y) + 1) % shamir.PRIME)
        fields[1] = frames.pack_fields([owner, kind, wrong])
        return _resign(reply, Stage.UNMASK, binding, sign, fields)

    proto = Evil("p0", lie)  # p0 holds the share with the smallest x for every owner
    sm, pm = proto.provision(IDS)
    inputs = make_inputs(IDS, m=32, seed=6)
    got, _ = run_round(proto, context(IDS, m=32), inputs, sm, pm)
    assert got.contributors == IDS
    assert np.abs(got.delta_sum - _exact(inputs, IDS)).max() <= len(IDS) / 2**12


def test_too_many_bad_shares_abort_without_a_wrong_sum() -> None:
    """Bad shares beyond what any consistent subset tolerates: the round aborts, never a wrong sum."""
    def garbage(session, msg, sign):
        reply = session.handle(msg)
        if msg.stage != STAGE[Stage.UNMASK]:
            return reply
        binding = session._plan.binding
        fields = frames.decode(binding, Stage.UNMASK, Direction.FROM_PARTY, reply.payload[:-SIG_BYTES])
        for i in range(1, len(fields)):
            owner, kind, y = frames.unpack_fields(fields[i], count=3)
            fields[i] = frames.pack_fields([owner, kind, shamir.encode_share(7)])
        return _resign(reply, Stage.UNMASK, binding, sign, fields)

    class Many(SecAgg):
        def party(self, ctx, pid, data, material):
            s = super().party(ctx, pid, data, material)
            return s if pid not in ("p0", "p1", "p2") else Evil(pid, garbage).party(ctx, pid, data, material)

    proto = Many(secagg(threshold=5).config)
    sm, pm = proto.provision(IDS)
    with pytest.raises(ProtocolAbort):
        run_round(proto, context(IDS, m=8), make_inputs(IDS, 8, 7), sm, pm)


def test_advert_replayed_from_another_attempt_is_refused() -> None:
    """Key substitution: the server shows p0 the keys p1 advertised in an earlier attempt of the
    round (signed by p1, so v1 accepted them; the server had p0 share under stale keys)."""
    proto = secagg()
    sm, pm = proto.provision(IDS)
    inputs = make_inputs(IDS, 16, 2)
    old = new_attempt(proto, context(IDS, m=16), 0, inputs, sm, pm)
    stale = old.deliver(old.server.start())["p1"].payload
    att = new_attempt(proto, context(IDS, m=16), 1, inputs, sm, pm)
    fresh = att.deliver(att.server.start())
    relayed = [stale] + [fresh[p].payload for p in IDS if p not in ("p0", "p1")]
    att.deliver({"p0": att.forge(Stage.SHARE, "p0", relayed)})
    assert att.refused == {"p0": STAGE[Stage.SHARE]}
