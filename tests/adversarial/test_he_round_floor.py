"""Threshold `he` under the round's own floor (issue 22): `sampling.min_round_size` reaches each side
as `RoundContext.min_contributors`, from its own config. A server that presents an honest party a
contributor set C above the he config's floor max(min_contributors, t) but below the round's floor
would have the party's input summed with too few others. Against the weakened party (he floor only)
the request is accepted; the real party refuses it when asked to sign C and when asked to answer
for C; the honest server aborts first, naming the floor.
"""

from __future__ import annotations

import numpy as np
import pytest

from _he_harness import IDS, M, Session, federation, refuses
from securefed.protocols.base import PartyInput, ProtocolAbort, ProtocolError, RoundContext
from securefed.protocols.driver import run_round
from securefed.protocols.he.threshold import layout as tl
from securefed.protocols.he.threshold.party import INPUT_STAGE

ROUND_MIN = 4  # sampling.min_round_size of the honest party's config
C = ("a", "b", "c")  # 3 = max(he min_contributors=2, t=3): enough for the he config, not for the round


@pytest.fixture(scope="module")
def fed():
    return federation()


def _he_floor_only(config, t, round_min=1):
    """The weakened check (before issue 22): the he config's floor, the round's floor ignored."""
    return max(config.min_contributors, t)


def _uploaded(fed, round_: int) -> Session:
    s = Session(fed, round_, min_contributors=ROUND_MIN)
    for p in s.parties:
        s.upload(p)
    return s


def _sigs(s: Session) -> dict[str, bytes]:
    """A quorum (4) of signatures on C: a and b sign, colluders d and e forge theirs."""
    return {p: s.sign(p, C) for p in ("a", "b")} | {p: s.forged_sign(p, C) for p in ("d", "e")}


def test_the_small_set_passes_the_he_floor(fed):
    he, public, _ = fed
    assert public.threshold == 3 and tl.quorum(len(IDS), 3) == 4
    assert len(C) == tl.contributors_floor(he.config, public.threshold) < ROUND_MIN


def test_sign_stage_refuses_a_set_below_the_round_floor(fed, monkeypatch):
    s = _uploaded(fed, 1)
    with pytest.raises(ProtocolError):
        s.sign("a", C)
    with monkeypatch.context() as m:
        m.setattr(tl, "contributors_floor", _he_floor_only)
        weak = _uploaded(fed, 2)
        assert len(weak.sign("a", C)) == tl.SIG_LEN  # the attack pays off against the weakened party


def test_decrypt_stage_refuses_a_set_below_the_round_floor(fed, monkeypatch):
    """Defence in depth: even a party whose sign-stage check was bypassed (it signed C) refuses to
    answer for C; the weakened party answers, and its answer serves a sum over 3 contributors."""
    with monkeypatch.context() as m:
        m.setattr(tl, "contributors_floor", _he_floor_only)
        weak = _uploaded(fed, 3)
        assert weak.answer("a", weak.decrypt_msg(C, _sigs(weak), ("a", "b", "d"))).shape[0] == weak.lay.n_ct
        s = _uploaded(fed, 4)
        sigs = _sigs(s)  # signed while the check is weakened
    assert refuses(s.parties["a"], s.decrypt_msg(C, sigs, ("a", "b", "d")))
    assert refuses(s.parties["b"], s.decrypt_msg(C, sigs, ("a", "b", "d")))


def test_server_aborts_first_naming_the_round_floor(fed):
    he, public, mats = fed
    rng = np.random.default_rng(0)

    def inputs(ctx):
        return {p: PartyInput((rng.standard_normal(M) * 0.2).astype(np.float32), None, 3.0) for p in ctx.party_ids}

    drop = {"d": INPUT_STAGE, "e": INPUT_STAGE}  # 3 uploads: the he floor is met, ROUND_MIN is not
    ctx = RoundContext("fed-floor", 5, IDS, M, False, 16, min_contributors=ROUND_MIN)
    with pytest.raises(ProtocolAbort, match="3 parties contributed, threshold he needs 4.*min_round_size"):
        run_round(he, ctx, inputs(ctx), public, mats, drop_at=drop)
