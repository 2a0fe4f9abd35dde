"""Real processes on 127.0.0.1: a coordinator and parties, protocol-only apps, every protocol that
is registered. The final server sum must equal the in-process driver's with the same inputs."""

from __future__ import annotations

import numpy as np
import pytest

from _deploy_helpers import (
    expected_sums,
    metrics,
    pick_drop,
    provision,
    round_context,
    server_state,
    stage_names,
    wait_for,
)
from securefed.deploy.protocol_only import protocol_only_input
from securefed.errors import ConfigError
from securefed.protocols import registry

PARTIES = ("p0", "p1", "p2")
# Protocols registered by other test modules (test-*) exist only in this process, not in the children.
PROTOCOLS = [n for n in registry.names() if not n.startswith("test-")]


def _provision(tmp_path, protocol, parties=PARTIES, config=None, **settings):
    """Every registered protocol must deploy: one whose provisioning raises fails here, never skips."""
    try:
        return provision(tmp_path / "fed", parties, protocol, config, **settings)
    except ConfigError as e:
        pytest.fail(f"{protocol} cannot be provisioned for deployment: {e}")


def _check_sum(fed, state, rounds, drop_at=None):
    want, weight = expected_sums(fed, rounds, drop_at)
    proto = fed.config.protocol
    if proto == "secagg":
        # Stochastic rounding with fresh CSPRNG dither: each party errs < one step per coordinate.
        from securefed.protocols.secagg.config import SecAggConfig

        cfg = SecAggConfig.model_validate(fed.config.protocol_config or {})
        atol = cfg.clip / 2**cfg.precision_bits * sum(len(sel) for sel in rounds.values())
        np.testing.assert_allclose(state["delta_sum"], want, rtol=0, atol=atol * (1 + 1e-9))
        assert state["total_weight"] == weight
    elif proto == "plain":
        np.testing.assert_array_equal(state["delta_sum"], want)
        assert state["total_weight"] == weight
    else:  # he: CKKS is approximate
        np.testing.assert_allclose(state["delta_sum"], want, rtol=1e-6, atol=1e-3)
        assert state["total_weight"] == pytest.approx(weight, rel=1e-6, abs=1e-3)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_three_parties_two_rounds_match_driver(tmp_path, procs, protocol):
    fed = _provision(tmp_path, protocol)
    procs.server(fed)
    for pid in PARTIES:
        procs.client(fed, pid)
    assert procs.wait("server", 60) == 0, procs.tail("server")
    for pid in PARTIES:
        assert procs.wait(pid, 20) == 0, procs.tail(pid)
    state = server_state(fed)
    assert state["last_round"] == 1 and state["rounds_applied"] == 2
    _check_sum(fed, state, {0: PARTIES, 1: PARTIES})
    # Every party received the final payload: the server state after the last round.
    for pid in PARTIES:
        assert (procs.logdir / f"{pid}.final").read_bytes()[:4] == b"POSA"
    lines = metrics(fed)
    assert [(m["round"], m["status"], m["contributors"]) for m in lines] == [
        (0, "ok", list(PARTIES)), (1, "ok", list(PARTIES))]
    assert all(set(m["bytes_in"]) == set(PARTIES) and min(m["bytes_out"].values()) > 0 for m in lines)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_party_killed_mid_round(tmp_path, procs, protocol):
    parties = ("p0", "p1", "p2", "p3")  # masking needs more than 3 to survive a dropout
    # threshold he: rounds of 3 of the 4 key holders need t = 2 (a signing quorum of 3); the default
    # t = 3 needs all 4 to sign, and provisioning refuses min_parties=3 for it.
    config = {"threshold_fraction": 0.25} if protocol == "he" else None
    fed = _provision(tmp_path, protocol, parties=parties, config=config, min_parties=3,
                     timeouts={"gather_s": 3.0})
    call, stage = pick_drop(fed, parties, "p3")
    # Round 0 must select all four: with three (p3 among them) p3's crash leaves too few to finish
    # the round and the attempt aborts instead of exercising recovery. Process start-up on a loaded
    # machine can stagger by seconds, so the parties start first and the server only once every one
    # of them is up and polling (they then connect within one backoff, well inside gather_s).
    for pid in parties[:3]:
        procs.client(fed, pid)
    procs.client(fed, "p3", "--crash-round", "0", "--crash-call", str(call))
    for pid in parties:
        wait_for(lambda: "reconnecting" in procs.tail(pid), 60, f"{pid} to start polling")
    procs.server(fed)
    assert procs.wait("server", 60) == 0, procs.tail("server")
    assert procs.wait("p3", 5) == 3  # died in the middle of a round
    lines = metrics(fed)
    assert [m["status"] for m in lines] == ["ok", "ok"]
    # Every round invites all four (securefed.membership); who was started depends on who had
    # connected when a round began: the crash round is the one p3 was started in. In the other it
    # is an invited party that never answered, a dropout from the first stage.
    crashed = [m["round"] for m in lines if "p3" in m["started"]]
    assert len(crashed) == 1 and all("p3" in m["dropouts"] and m["selected"] == list(parties) for m in lines)
    # threshold he counts an upload once it arrived, whoever drops later (decryption needs no
    # contributor): p3 may be a contributor of the round it crashed in, never of the other
    assert all("p3" not in m["contributors"] for m in lines if protocol != "he" or m["round"] != crashed[0])
    rounds = {m["round"]: m["selected"] for m in lines}
    first = stage_names(fed, parties)[0]
    drop_at = {m["round"]: {"p3": stage if m["round"] == crashed[0] else first} for m in lines}
    _check_sum(fed, server_state(fed), rounds, drop_at=drop_at)


def test_server_killed_after_round_one_resumes_from_checkpoint(tmp_path, procs):
    fed = provision(tmp_path / "fed", PARTIES, "plain", app={"train_delay_s": 3.0})
    ckpt = fed.server_dir / "state" / "checkpoint.bin"
    procs.server(fed, name="server1")
    for pid in PARTIES:
        procs.client(fed, pid)
    wait_for(ckpt.exists, 40, "the round-1 checkpoint")
    # Round 2 is in training (3 s, a margin for a loaded machine to notice the checkpoint): killed
    # mid-federation.
    procs.kill("server1")
    assert server_state(fed)["last_round"] == 0
    procs.server(fed, name="server2")
    assert procs.wait("server2", 60) == 0, procs.tail("server2")
    assert '"resumed_after": 0' in (procs.logdir / "server2.out").read_text()
    for pid in PARTIES:
        assert procs.wait(pid, 20) == 0, procs.tail(pid)
    state = server_state(fed)
    assert state["last_round"] == 1 and state["rounds_applied"] == 2
    _check_sum(fed, state, {0: PARTIES, 1: PARTIES})
    assert [(m["round"], m["status"]) for m in metrics(fed)] == [(0, "ok"), (1, "ok")]


def test_aborted_round_is_retried_then_completes(tmp_path, procs):
    # One party that dies in the middle of round 0: nobody contributed, plain aborts the attempt;
    # the party comes back and the retried attempt completes.
    fed = provision(tmp_path / "fed", ("p0",), "plain", rounds=1, max_round_retries=3)
    procs.server(fed)
    procs.client(fed, "p0", "--crash-round", "0", name="p0-crashing")
    assert procs.wait("p0-crashing", 30) == 3
    procs.client(fed, "p0")
    assert procs.wait("server", 60) == 0, procs.tail("server")
    assert procs.wait("p0", 20) == 0
    lines = metrics(fed)
    assert [(m["round"], m["attempt"], m["status"]) for m in lines] == [(0, 0, "aborted"), (0, 1, "ok")]
    _check_sum(fed, server_state(fed), {0: ("p0",)})


def test_round_fails_after_bounded_retries(tmp_path, procs):
    fed = provision(tmp_path / "fed", PARTIES, "plain", max_round_retries=1, timeouts={"quorum_s": 0.3})
    procs.server(fed)
    assert procs.wait("server", 30) != 0
    assert "round 0 aborted 2 times; stopping" in procs.tail("server")  # one line, no traceback
    assert "Traceback" not in procs.tail("server")
    assert [(m["attempt"], m["status"]) for m in metrics(fed)] == [(0, "aborted"), (1, "aborted")]
    assert not (fed.server_dir / "state" / "checkpoint.bin").exists()


def test_server_stores_and_logs_no_individual_payload(tmp_path, procs):
    fed = provision(tmp_path / "fed", PARTIES, "plain", rounds=1, app={"vector_len": 32})
    procs.server(fed)
    for pid in PARTIES:
        procs.client(fed, pid)
    assert procs.wait("server", 60) == 0, procs.tail("server")
    # Each party's plain message (w * delta, in the clear) must appear nowhere the server writes.
    ctx = round_context(fed, 0, PARTIES)
    secrets_ = []
    for pid in PARTIES:
        inp = protocol_only_input(fed.config.app["seed"], pid, 0, ctx)
        wdelta = (inp.weight * inp.delta.astype(np.float64)).astype("<f8").tobytes()
        secrets_ += [wdelta[:64], inp.delta.tobytes()[:32]]
    written = [p for p in fed.server_dir.rglob("*") if p.is_file()]
    written += [procs.logdir / "server.out", procs.logdir / "server.err"]
    for path in written:
        blob = path.read_bytes()
        assert all(s not in blob for s in secrets_), path
