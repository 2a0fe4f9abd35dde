"""A real federation with the real FL apps: `securefed provision`, one `securefed server` and three
`securefed client` processes on 127.0.0.1, trained on the tiny model. The final adapter equals the
one the same apps produce in process (protocols.driver.run_round), round for round."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from securefed.data.default import default_rows
from securefed.deploy.fl_apps import FLClientApp, FLServerApp
from securefed.deploy.settings import load_federation
from securefed.protocols import registry
from securefed.protocols.driver import run_round

CLI = [sys.executable, "-m", "securefed.cli.app"]
PARTIES = ["bank-c", "hospital-a", "hospital-b"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_party_data(tmp: Path) -> dict[str, Path]:
    rows = default_rows()[:180]
    out = {}
    for i, pid in enumerate(PARTIES):
        path = tmp / f"{pid}.jsonl"
        path.write_text("".join(json.dumps({"text": r["text"], "label": r["label"]}) + "\n" for r in rows[i::3]))
        out[pid] = path
    return out


def _in_process_reference(fed_dir: Path, data: dict[str, Path], rounds: int) -> dict[str, torch.Tensor]:
    fed = load_federation(fed_dir / "server" / "federation.json")
    protocol = registry.create(fed.protocol, fed.protocol_config)
    server_mat, party_mats = protocol.provision(tuple(PARTIES))
    server = FLServerApp(fed)
    clients = {p: FLClientApp(fed, p, str(data[p]), fed_dir / "ref" / p) for p in PARTIES}
    for r in range(rounds):
        selected = server.select(r, tuple(PARTIES))
        ctx = server.round_context(r, selected)
        payload = server.global_payload(r)
        inputs = {p: clients[p].local_update(r, payload, ctx) for p in selected}
        vsum, _ = run_round(protocol, ctx, inputs, server_mat, party_mats)
        server.apply(r, vsum)
    return dict(server.state.params)


@pytest.mark.slow
@pytest.mark.parametrize("protocol, rounds", [("plain", 2), ("secagg", 1)])
def test_real_processes_match_in_process(tmp_path, small_overrides, protocol, rounds):
    fed_dir = tmp_path / "fed"
    data = _write_party_data(tmp_path)
    overrides = [o for o in small_overrides if not o.startswith(("parties", "data.", "rounds"))]
    overrides += [f"rounds={rounds}", f"aggregation.protocol={protocol}"]
    sets = [x for o in overrides for x in ("--set", o)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    res = subprocess.run([*CLI, "provision", "--parties", ",".join(PARTIES), "--server-host", "127.0.0.1",
                          "--out", str(fed_dir), "--port", str(_port()), *sets], capture_output=True, text=True,
                         env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    # Logs go to files: a full stdout/stderr pipe would block a chatty process.
    logs = {name: (tmp_path / f"{name}.log").open("w") for name in ["server", *PARTIES]}
    procs = [subprocess.Popen([*CLI, "server", "--federation", str(fed_dir / "server")], env=env,
                              stdout=logs["server"], stderr=subprocess.STDOUT)]
    procs += [subprocess.Popen([*CLI, "client", "--kit", str(fed_dir / p), "--data", str(data[p])], env=env,
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
    tails = {n: (tmp_path / f"{n}.log").read_text()[-1500:] for n in logs}
    assert all(p.returncode == 0 for p in procs), tails
    final = load_file(str(fed_dir / "server" / "adapter" / "adapter_model.safetensors"))
    for pid in PARTIES:
        got = load_file(str(fed_dir / pid / "final-adapter" / "adapter_model.safetensors"))
        assert all(torch.equal(got[k], final[k]) for k in final)
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
    metrics = [json.loads(x) for x in (fed_dir / "server" / "state" / "metrics.jsonl").read_text().splitlines()]
    assert len([m for m in metrics if "contributors" in m.get("app", {})]) == rounds
