"""Round membership chosen by the server (issue 22): selection grinding under a sparse graph, and a
tiny round. Each attack drives real SecAggParty sessions and pays off against the weakened gate
parties used before (any subset of the seeded selection, no size floor); the real gate
(`Membership.check`, what every deployed party runs before any session) refuses it, and with the
derived invited set the server can only drop parties, which buys it nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest

from securefed.membership import Membership, MembershipRefused
from securefed.protocols.base import ProtocolAbort, RoundContext
from securefed.protocols.driver import run_round
from securefed.protocols.secagg import SecAgg, SecAggConfig, shamir
from securefed.protocols.secagg.frames import Stage

from _harness import STAGE, Attempt, context, make_inputs

M = 8  # vector length


def _membership(sm, min_round_size: int = 3, count: int | None = None) -> Membership:
    keys = {pid: hashlib.sha256(pk).hexdigest() for pid, pk in sm.identity_keys.items()}
    return Membership.from_roster(keys, count, None, min_round_size)


def _weakened_gate(ctx: RoundContext, seeded: tuple[str, ...]) -> RoundContext:
    """What parties checked before: the server's set is any subset of the seeded selection."""
    if not set(ctx.party_ids) <= set(seeded):
        raise MembershipRefused("not a subset")
    return ctx


def test_selection_grinding_surrounds_a_target_unless_the_invited_set_is_derived() -> None:
    ids = tuple(f"p{i:03d}" for i in range(100))
    proto = SecAgg(SecAggConfig(graph="sparse", precision_bits=12))
    sm, pm = proto.provision(ids)
    colluders = ids[1::3][:30]
    target = "p000"
    rule = _membership(sm)
    invited = rule.invited(0)
    assert invited == ids  # sampling: everyone, so the old rule let the server pick any subset

    # The attack: invite the target and the 30 colluders only. In the ring over these 31 parties the
    # target's k neighbours are all colluders, who then hold >= t shares of its self-mask seed.
    chosen = tuple(sorted((target, *colluders)))
    ctx = _weakened_gate(context(chosen, M, round_=0), invited)  # the weakened party accepts it
    inputs = make_inputs(chosen, M, 7)
    att = Attempt(proto, ctx, inputs, sm, pm)
    plan = att.plan
    assert plan.neighbours(target) <= set(colluders) and plan.k >= plan.threshold
    masked = att.through_share()
    sessions = {c: att.parties[c] for c in plan.neighbours(target)}  # the attacker's own processes
    b_shares = {plan.share_x(c): shamir.decode_share(s._held[target][1]) for c, s in sessions.items()}
    b_target = shamir.int_to_secret(shamir.recover(b_shares, plan.threshold))
    recovered = att.strip(target, masked[target], b_target, {c: s._s_raw for c, s in sessions.items()})
    want = inputs[target].delta * inputs[target].weight
    assert np.allclose(recovered, want, atol=1e-2)  # the target's update, alone: the attack pays off

    # The real gate refuses that context before any session exists.
    with pytest.raises(MembershipRefused, match="not the derived invited set"):
        rule.check(context(chosen, M, round_=0))

    # With the derived set the server can only drop parties: t stays that of the 100-party graph, so
    # a target that keeps only its colluding neighbours refuses to share (it is not surrounded).
    full = rule.check(context(invited, M, round_=0))
    att = Attempt(proto, full, make_inputs(invited, M, 7), sm, pm)
    plan = att.plan
    honest = [p for p in invited if p not in colluders]
    victim = min(honest, key=lambda p: len(plan.neighbours(p) & set(colluders)))
    assert len(plan.neighbours(victim) & set(colluders)) < plan.threshold
    alive = {victim, *colluders}
    adverts = att.deliver({p: m for p, m in att.server.start().items() if p in alive})
    # the honest rest "dropped": the victim is shown the adverts of its colluding neighbours only
    shown = [adverts[c].payload for c in sorted(plan.neighbours(victim) & set(colluders))]
    assert att.deliver({victim: att.forge(Stage.SHARE, victim, shown)}) == {}
    assert att.refused.get(victim) == STAGE[Stage.SHARE]  # too few live neighbours: no share leaves


def test_tiny_round_reveals_two_inputs_unless_membership_is_derived_and_bounded() -> None:
    ids = tuple(f"p{i}" for i in range(10))
    proto = SecAgg(SecAggConfig(precision_bits=12))
    sm, pm = proto.provision(ids)
    rule = _membership(sm, min_round_size=3)
    a, b, colluder = "p1", "p4", "p7"

    # The attack: a round of three. It completes; the colluder subtracts its own input.
    tiny = _weakened_gate(context((a, b, colluder), M, round_=0), rule.invited(0))
    inputs = make_inputs(tiny.party_ids, M, 3)
    vsum, _ = run_round(proto, tiny, inputs, sm, pm)
    leaked = vsum.delta_sum - inputs[colluder].delta * inputs[colluder].weight
    want = inputs[a].delta * inputs[a].weight + inputs[b].delta * inputs[b].weight
    assert np.allclose(leaked, want, atol=1e-2)  # x_A + x_B: pays off

    with pytest.raises(MembershipRefused, match="not the derived invited set"):
        rule.check(tiny)

    # A configuration that invites fewer than min_round_size is refused too.
    small = _membership(sm, min_round_size=4, count=3)
    with pytest.raises(MembershipRefused, match="below min_round_size=4"):
        small.check(context(small.invited(1), M, round_=1))


def test_surviving_contributors_below_min_round_size_are_refused() -> None:
    """The invited set is right, but the server drops parties until the sum holds few inputs: a
    party refuses to unmask a survivor set below its own min_round_size (here above secagg's t)."""
    ids = tuple(f"p{i}" for i in range(10))
    proto = SecAgg(SecAggConfig(precision_bits=12))
    sm, pm = proto.provision(ids)
    rule = _membership(sm, min_round_size=8)
    ctx = rule.check(context(rule.invited(2), M, round_=2))
    assert ctx.min_contributors == 8
    inputs = make_inputs(ids, M, 5)
    drop = {p: STAGE[Stage.MASKED] for p in ids[:3]}  # 7 survivors >= t = 6, < 8
    weak = dataclasses.replace(ctx, min_contributors=1)
    vsum, _ = run_round(proto, weak, inputs, sm, pm, drop_at=drop)  # weakened: a sum of 7 comes out
    assert len(vsum.contributors) == 7
    with pytest.raises(ProtocolAbort):
        run_round(proto, dataclasses.replace(ctx, attempt=1), inputs, sm, pm, drop_at=drop)
