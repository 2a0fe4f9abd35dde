"""Inconsistent selection, at the deployed party: the invited set of a round is derived from the
roster's key fingerprints (securefed.membership), so the server can neither add a party nor leave
one out (v1 took any selection; v2 took any subset of the seeded one, which let the server shrink a
round to a target and its colluders: tests/adversarial/test_membership.py). An invited party the
server cannot reach is a dropout of the round, never a smaller round."""

from __future__ import annotations

import numpy as np
import pytest

from _deploy_helpers import provision
from securefed.deploy.kit import load_party_kit
from securefed.deploy.party import _Party
from securefed.deploy.roster import membership_of
from securefed.deploy.wire import encode_round_start
from securefed.protocols.base import PartyInput, RoundContext
from securefed.transport.frames import Kind

PARTIES = ("p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7")


class _Link:
    def __init__(self) -> None:
        self.sent: list[Kind] = []

    def send(self, kind, **kw) -> None:
        self.sent.append(kind)


class _App:
    def __init__(self) -> None:
        self.trained = 0

    def local_update(self, round, payload, ctx) -> PartyInput:
        self.trained += 1
        return PartyInput(np.zeros(ctx.vector_len, np.float32), None, 1.0)


def test_party_runs_only_the_derived_invited_set(tmp_path) -> None:
    fed = provision(tmp_path / "fed", PARTIES, "secagg", app={"sampling": {"count": 5}})
    rule = membership_of(fed.config)
    fid = fed.config.federation_id
    r = next(r for r in range(50) if "p0" in rule.invited(r))
    invited = rule.invited(r)
    outsider = next(p for p in PARTIES if p not in invited)
    party = _Party(load_party_kit(fed.party_dirs["p0"]), _App(), None)
    link = _Link()

    def start(ids: tuple[str, ...], attempt: int) -> None:
        party._round_start(link, r, attempt, encode_round_start(RoundContext(fid, r, tuple(sorted(ids)), 8, False, 10), b""))

    start(tuple(p for p in invited if p != outsider)[:-1] + (outsider,), 0)  # one swapped in
    start(tuple(p for p in invited if p == "p0" or p != invited[-1]), 1)  # one left out (v2 took it)
    assert link.sent == [Kind.DROPPED, Kind.DROPPED] and party.app.trained == 0
    start(invited, 2)
    assert link.sent[-1] == Kind.READY and party.app.trained == 1 and party.key == (r, 2)
    assert party.session is not None and party.session._plan.ctx.min_contributors == 3  # its own floor


def test_the_invited_set_follows_the_roster_not_the_operator(tmp_path) -> None:
    """Two federations of the same parties with the same settings invite different sets (each
    roster's keys seed it), and the rule reads nothing the operator picks freely."""
    a = membership_of(provision(tmp_path / "a", PARTIES, "secagg", app={"sampling": {"count": 4}}).config)
    b = membership_of(provision(tmp_path / "b", PARTIES, "secagg", app={"sampling": {"count": 4}}).config)
    assert [a.invited(r) for r in range(8)] != [b.invited(r) for r in range(8)]
    assert all(len(a.invited(r)) == 4 for r in range(8))


def test_a_new_federation_names_its_rule_and_an_old_one_keeps_numpy_choice(tmp_path) -> None:
    """federation.json made now writes `sampling.rule` out; one written before rules had names
    (no `rule`) keeps the numpy-choice rule its parties have been deriving all along."""
    import dataclasses

    from securefed.deploy.fl_apps import federation_root_config
    from securefed.membership import derive_seed
    from securefed.deploy.roster import _selection_line
    from securefed.deploy.settings import load_federation

    fed = provision(tmp_path / "fed", PARTIES, "secagg", app={"sampling": {"count": 4}})
    on_disk = load_federation(fed.party_dirs["p0"])
    assert on_disk.app["sampling"]["rule"] == "sha256-rank" and membership_of(on_disk).rule == "sha256-rank"
    old = dataclasses.replace(fed.config, app={"sampling": {"count": 4}})
    rule = membership_of(old)
    assert rule.rule == "numpy-choice"
    for r in range(6):
        rng = np.random.default_rng(derive_seed(rule.seed, "select", r))
        assert rule.invited(r) == tuple(sorted(PARTIES[i] for i in rng.choice(len(PARTIES), size=4, replace=False)))
    assert _selection_line(on_disk) == "# selection: 4 of 8 a round, sha256-rank"
    assert "numpy-choice (federation.json from before rules had names" in _selection_line(old)
    from securefed.errors import ConfigError

    for bad, said in (([4], "Input should be a valid dictionary"), ({"count": 0}, "count: Input should be greater")):
        with pytest.raises(ConfigError, match=f"federation.json: sampling settings invalid \\(.*{said}"):
            membership_of(dataclasses.replace(fed.config, app={"sampling": bad}))
    fl = dataclasses.replace(fed.config, app={"config": {"parties": 8, "sampling": {"count": 4}}})
    assert federation_root_config(fl).sampling.rule == "numpy-choice"


class _OtherNumpy:
    """numpy as a release with another Generator stream would be (numpy does not promise its streams
    across releases): default_rng draws from a different seed."""

    def __getattr__(self, name):
        return getattr(np, name)

    class random:
        @staticmethod
        def default_rng(seed):
            return np.random.default_rng(seed ^ 1)


@pytest.mark.parametrize("rule", ["numpy-choice", "sha256-rank"])
def test_a_party_with_another_numpy_agrees_only_under_sha256_rank(tmp_path, monkeypatch, rule) -> None:
    """The coordinator derives a round's set with one numpy, a party with another. Under numpy-choice
    the party refuses the server's (honest) set in most rounds, so such a federation stalls; under
    sha256-rank, which numpy never touches, it accepts every one."""
    import securefed.membership as membership

    fed = provision(tmp_path / "fed", PARTIES, "secagg", app={"sampling": {"count": 4, "rule": rule}})
    m = membership_of(fed.config)
    honest = [m.invited(r) for r in range(12)]
    monkeypatch.setattr(membership, "np", _OtherNumpy())
    refused = 0
    for r, invited in enumerate(honest):
        try:
            m.check(RoundContext(fed.config.federation_id, r, invited, 8, False, 10))
        except membership.MembershipRefused:
            refused += 1
    assert refused >= 8 if rule == "numpy-choice" else refused == 0
