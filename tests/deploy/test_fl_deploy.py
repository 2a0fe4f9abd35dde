"""A real federation with the real FL apps: `securefed keygen`/`provision` (the CLI, in this process),
then one `securefed server` and three `securefed client` processes on 127.0.0.1, trained on the tiny
model. The final adapter equals the one the same apps produce in process (protocols.driver.run_round),
round for round."""

from __future__ import annotations

import json
import os
import socket
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from _fl_helpers import PARTIES, InProcessFederation, fl_overrides, free_port, write_party_data
from securefed.cli.app import app

CLI = [sys.executable, "-m", "securefed.cli.app"]


def _in_process_reference(fed_dir: Path, data: dict[str, Path], rounds: int) -> dict[str, torch.Tensor]:
    fed = InProcessFederation(fed_dir, data, fed_dir / "ref")
    for r in range(rounds):
        fed.run_round(r)
    return dict(fed.server.state.params)


def _cli(*args: str) -> str:
    res = CliRunner().invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return res.output


def _run_real_federation(tmp_path: Path, overrides: list[str]) -> tuple[Path, dict[str, Path], dict[str, str]]:
    """keygen + provision (CLI in process), then server + 3 clients as processes; (federation dir, party
    data, log tails)."""
    fed_dir = tmp_path / "fed"
    data = write_party_data(tmp_path)
    sets = [x for o in overrides for x in ("--set", o)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    # Each party makes its keys in its own folder (its machine); the operator sees only the requests.
    # These steps run the CLI in this process (a process each would add ~20 s to every test); the
    # server and the parties below are real processes.
    kits = {p: tmp_path / "machines" / p for p in PARTIES}
    for p in PARTIES:
        _cli("keygen", "--party", p, "--out", str(kits[p]), *sets)
    reqs = [x for p in PARTIES for x in ("--request", str(kits[p] / "request"))]
    provision = ["provision", "--parties", ",".join(PARTIES), "--server-host", "127.0.0.1",
                 "--out", str(fed_dir), "--port", str(free_port()), *reqs, *sets]
    assert "Next: give roster.json" in _cli(*provision)
    for p in PARTIES:  # pass 2: each party records the roster and reveals its seed contribution
        _cli("keygen", "--party", p, "--out", str(kits[p]), "--finish", str(fed_dir / "roster.json"), *sets)
    _cli(*provision)
    for p in PARTIES:  # the operator's public kit goes next to the party's keys
        for f in (fed_dir / p).iterdir():
            shutil.copy(f, kits[p] / f.name)
    assert not list(fed_dir.rglob("party-key.pem")) and not list(fed_dir.rglob("protocol-secret.bin"))
    # Logs go to files: a full stdout/stderr pipe would block a chatty process.
    logs = {name: (tmp_path / f"{name}.log").open("w") for name in ["server", *PARTIES]}
    procs = [subprocess.Popen([*CLI, "server", "--federation", str(fed_dir / "server")], env=env,
                              stdout=logs["server"], stderr=subprocess.STDOUT)]
    procs += [subprocess.Popen([*CLI, "client", "--kit", str(kits[p]), "--data", str(data[p])], env=env,
                               stdout=logs[p], stderr=subprocess.STDOUT) for p in PARTIES]
    try:
        deadline = time.monotonic() + 240
        for p in procs:
            p.wait(timeout=max(1, deadline - time.monotonic()))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for f in logs.values():
            f.close()
    tails = {n: (tmp_path / f"{n}.log").read_text() for n in logs}
    assert all(p.returncode == 0 for p in procs), {n: t[-1500:] for n, t in tails.items()}
    final = load_file(str(fed_dir / "server" / "adapter" / "adapter_model.safetensors"))
    for pid in PARTIES:
        got = load_file(str(kits[pid] / "final-adapter" / "adapter_model.safetensors"))
        assert all(torch.equal(got[k], final[k]) for k in final)
    return fed_dir, data, tails


def _server_metrics(fed_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (fed_dir / "server" / "state" / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("protocol, rounds", [("plain", 2), ("secagg", 1)])
def test_real_processes_match_in_process(tmp_path, small_overrides, protocol, rounds):
    overrides = fl_overrides(small_overrides, f"rounds={rounds}", f"aggregation.protocol={protocol}")
    fed_dir, data, tails = _run_real_federation(tmp_path, overrides)
    # Not terminals: a line per round on stdout, and the same in each side's run.log
    assert f"coordinator round {rounds}: 3 contributors, train loss " in tails["server"]
    assert f"coordinator round {rounds}: 3 contributors, train loss " in (fed_dir / "server" / "run.log").read_text()
    assert all(f"{p} round {rounds} aggregated" in (tmp_path / "machines" / p / "run.log").read_text() for p in PARTIES)
    final = load_file(str(fed_dir / "server" / "adapter" / "adapter_model.safetensors"))
    reference = _in_process_reference(fed_dir, data, rounds=rounds)
    if protocol == "plain":
        for k, v in reference.items():
            assert torch.equal(final[k], v), k
    else:
        # Both runs round stochastically with fresh CSPRNG dither: each mean update errs by at most
        # E/W (E = n * clip / 2^precision_bits on the weighted sum), so they differ by at most 2E/W.
        from securefed.protocols.secagg.config import SecAggConfig

        cfg = SecAggConfig()
        weight = sum(len(data[p].read_text().splitlines()) for p in PARTIES)
        bound = 2 * len(PARTIES) * cfg.clip / 2**cfg.precision_bits / weight
        worst = max(float((final[k] - v).abs().max()) for k, v in reference.items())
        assert worst <= bound * (1 + 1e-6), (worst, bound)
        assert max(float(v.abs().max()) for k, v in reference.items() if "lora_B" in k) > 10 * bound
    assert len([m for m in _server_metrics(fed_dir) if "contributors" in m.get("app", {})]) == rounds
    _observable_like_a_run(tmp_path, fed_dir, rounds, tails)


def _observable_like_a_run(tmp_path: Path, fed_dir: Path, rounds: int, tails: dict[str, str]) -> None:
    """The server folder is a run directory: rows of aggregated party reports that `report` plots, and
    `status` reads once the coordinator is gone (no raw gRPC error)."""
    rows = [json.loads(x) for x in (fed_dir / "server" / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == list(range(rounds + 1))  # row 0: the initial model, as scored
    assert all(r["contributors"] == 3 and 0 < r["train_loss"] < 20 for r in rows[1:])
    assert all(0 < r["eval_loss"] < 20 and 0 <= r["accuracy"] <= 1 for r in rows[:-1])
    assert "train loss" in tails["server"] and "my train loss" in (tmp_path / "machines" / PARTIES[0] / "run.log").read_text()
    out = _cli("report", str(fed_dir / "server" / "state"), "--out", str(tmp_path / "report"))
    assert "wrote 3 figures" in out, out  # loss, accuracy, bytes
    assert f"| {rounds} |" in (tmp_path / "report" / "report.md").read_text()
    status = json.loads(_cli("status", "--federation", str(fed_dir / "server")))
    assert status["rounds_completed"] == rounds and status["finished"] and "not reachable" in status["coordinator"]
    assert status["last_round_metrics"]["round"] == rounds


@pytest.mark.slow
@pytest.mark.parametrize("mechanism, protocol", [("example", "plain"), ("user-distributed", "secagg")])
def test_real_processes_with_differential_privacy(tmp_path, small_overrides, mechanism, protocol):
    overrides = fl_overrides(small_overrides, "rounds=1", f"aggregation.protocol={protocol}",
                             f"privacy.mechanism={mechanism}", "privacy.noise_multiplier=1.0")
    fed_dir, _, tails = _run_real_federation(tmp_path, overrides)
    (app,) = [m["app"] for m in _server_metrics(fed_dir) if m["status"] == "ok"]
    if mechanism == "example":
        # Each party accounts its own DP-SGD (ledger on its disk, epsilon in its log); the server has none.
        for pid in PARTIES:
            (row,) = json.loads((tmp_path / "machines" / pid / "state" / "privacy.json").read_text())
            assert row["round"] == 0 and 0 < row["dp_epsilon"][pid] < float("inf")
            assert set(row["dp_epsilon"]) == {pid}
            assert "dp_epsilon" in tails[pid]
        assert "dp_epsilon" not in app
    else:
        # The server decoded the distributed sum and accounted every contributor.
        assert set(app["dp_epsilon"]) == set(PARTIES) and app["dp_epsilon_max"] > 0
        assert not any((tmp_path / "machines" / pid / "state" / "privacy.json").exists() for pid in PARTIES)
