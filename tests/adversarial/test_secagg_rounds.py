"""The server picks round numbers: replaying a round, going backwards, or grinding for a neighbour
graph in which colluders surround a target. The party's round ledger refuses the first three; the
ring order comes from the pinned roster, so grinding is limited to the configured rounds."""

from __future__ import annotations

import pytest

from securefed.errors import ConfigError
from securefed.protocols.base import ProtocolAbort
from securefed.protocols.driver import run_round
from securefed.protocols.secagg import SecAgg, SecAggConfig, graph
from securefed.protocols.secagg.frames import Stage
from securefed.protocols.secagg.primitives import roster_seed

from _harness import STAGE, context, make_inputs, new_attempt, secagg

IDS = tuple(f"p{i}" for i in range(5))


def _bound(proto: SecAgg, directory, max_rounds: int) -> SecAgg:
    for pid in IDS:
        proto.bind_party_state(pid, directory / pid, max_rounds)
    return proto


def test_unmask_of_a_round_is_answered_once_even_across_attempts_and_restarts(tmp_path) -> None:
    proto = _bound(secagg(), tmp_path, 10)
    sm, pm = proto.provision(IDS)
    inputs = make_inputs(IDS, 8, 1)
    run_round(proto, context(IDS, 8, round_=3), inputs, sm, pm)  # honest: unmasked round 3
    # A second attempt of round 3 is refused at its first stage by everyone.
    att = new_attempt(proto, context(IDS, 8, round_=3), 1, inputs, sm, pm)
    att.deliver(att.server.start())
    assert att.refused == {p: STAGE[Stage.ADVERTISE] for p in IDS}
    # The ledger is on disk: a restarted party (new protocol object) still refuses.
    again = _bound(SecAgg(proto.config), tmp_path, 10)
    with pytest.raises(ProtocolAbort):
        run_round(again, context(IDS, 8, round_=3, attempt=2), inputs, sm, pm)
    run_round(again, context(IDS, 8, round_=4), inputs, sm, pm)  # the next round is fine


def test_rounds_backwards_or_past_the_configured_rounds_are_refused(tmp_path) -> None:
    proto = _bound(secagg(), tmp_path, 6)
    sm, pm = proto.provision(IDS)
    inputs = make_inputs(IDS, 8, 1)
    att = new_attempt(proto, context(IDS, 8, round_=4), 0, inputs, sm, pm)
    att.deliver(att.server.start())  # round 4 begun (then aborted by the server)
    for r in (2, 6, 2**40):
        bad = new_attempt(proto, context(IDS, 8, round_=r), 0, inputs, sm, pm)
        bad.deliver(bad.server.start())
        assert bad.refused == {p: STAGE[Stage.ADVERTISE] for p in IDS}, r
    run_round(proto, context(IDS, 8, round_=4, attempt=1), inputs, sm, pm)  # a retry of round 4 is fine


def test_a_corrupt_ledger_is_a_clear_error(tmp_path) -> None:
    (tmp_path / "p0").mkdir()
    (tmp_path / "p0" / "secagg-rounds.json").write_text("{not json")
    with pytest.raises(ConfigError, match="secagg-rounds.json"):
        secagg().bind_party_state("p0", tmp_path / "p0", 3)


def test_grinding_round_numbers_is_bounded_by_the_configured_rounds(tmp_path) -> None:
    """v1: graph seed = HKDF(federation, round) and the party took any round number, so a server
    with 30% colluders found, offline, a round where t colluders sit among a target's k neighbours
    (they alone then hold t shares of both its secrets). The search still finds such a round far
    out; the party refuses it because it is past the configured rounds."""
    ids = tuple(f"q{i:03d}" for i in range(100))
    cfg = SecAggConfig(graph="sparse", neighbours=10, threshold=6)
    colluders = set(ids[::3][:30])
    target = "q001"
    proto = SecAgg(cfg)
    sm, pm = proto.provision(ids)
    seed = roster_seed(sm.identity_keys)
    i = ids.index(target)

    def colluding_neighbours(r: int) -> int:
        sets = graph.ring(graph.round_order(ids, seed, r), 10)
        return sum(ids[j] in colluders for j in sets[i])

    needed, max_rounds = 6, 5  # t colluders among the k = 10 neighbours
    found = next(r for r in range(max_rounds, 100_000) if colluding_neighbours(r) >= needed)
    proto.bind_party_state(target, tmp_path, max_rounds)
    att = new_attempt(proto, context(ids, 8, round_=found), 0, make_inputs(ids, 8, 1), sm, pm)
    att.deliver({target: att.server.start()[target]})
    assert att.refused == {target: STAGE[Stage.ADVERTISE]}
