"""A real two-node Ray cluster on this machine (`ray start --head` and a second `ray start
--address=...`, each with its own custom resource), started and stopped by the test: the parties
train on both nodes, secagg runs across them, and the adapter agrees with in-process `plain` within
secagg's quantization bound."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

pytest.importorskip("ray")

from ray.util import get_node_ip_address  # noqa: E402

from securefed.config import load_config  # noqa: E402
from securefed.simulation.runner import simulate  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _ray_start(args: list[str], log, env) -> subprocess.Popen:
    # --block keeps `ray start` in the foreground as the leader of its own process group: killing
    # the group stops this node's gcs/raylet/workers and nothing else on a shared machine (never
    # `ray stop`, which would stop every Ray on it).
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--block", "--disable-usage-stats",
           "--object-store-memory=100000000",
           "--dashboard-agent-listen-port", str(_free_port()), *args]
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)


def _stop(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 3), (signal.SIGKILL, 10)):  # a node drains for up to 30 s: not here
        try:
            os.killpg(proc.pid, sig)
            proc.wait(wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture
def two_nodes(tmp_path, _tiny_cache):
    """-> (address, env): the head's address and the environment of this cluster's members."""
    # Ray clusters authenticate with a token: a fresh one for this cluster, in the environment of its
    # nodes and of the driver (a subprocess: a process that already used Ray keeps its first token).
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    # this cluster's sessions and logs, apart from any other Ray here (short: Ray's socket paths must
    # fit in 107 bytes, which pytest's tmp_path does not leave room for)
    temp = tempfile.mkdtemp(prefix="sfray-")
    port = _free_port()
    procs = []
    log = (tmp_path / "ray-start.log").open("w")
    try:
        procs.append(_ray_start(["--head", "--include-dashboard=false", f"--port={port}", f"--temp-dir={temp}", "--num-cpus=1",
                                 "--dashboard-port", str(_free_port()), "--ray-client-server-port",
                                 str(_free_port()), '--resources={"nodeA": 1}'], log, env))
        address = f"{get_node_ip_address()}:{port}"
        _wait(lambda: subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "status", f"--address={address}"],
                                     capture_output=True, env=env).returncode == 0, procs[0])
        procs.append(_ray_start([f"--address={address}", "--num-cpus=1", '--resources={"nodeB": 1}'], log, env))
        yield address, env
    finally:
        for p in reversed(procs):
            _stop(p)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def _wait(ready, head: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if head.poll() is not None:
            raise RuntimeError(f"`ray start --head` exited with {head.returncode} (see ray-start.log)")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the head node did not come up within {timeout:g} s")
        time.sleep(1.0)


def test_parties_on_both_nodes_secagg_within_the_quantization_bound(tmp_path, small_overrides, two_nodes):
    from safetensors.torch import load_file

    address, env = two_nodes
    base = small_overrides + ["rounds=1", "algorithm.name=fedavg"]
    simulate(load_config(None, base), tmp_path / "plain")
    # The CLI joins the cluster; one actor per node, pinned by its custom resource (an actor waits
    # for its node if the second one is still joining).
    sets = [x for o in base + ["aggregation.protocol=secagg", "simulation.ray.actors=2",
                               "simulation.ray.resources=[{nodeA=1}, {nodeB=1}]"] for x in ("--set", o)]
    run = subprocess.run([sys.executable, "-m", "securefed.cli.app", "simulate", *sets, "--backend", "ray",
                          "--address", address, "--out", str(tmp_path / "ray")], env=env, capture_output=True,
                         text=True, timeout=400)
    assert run.returncode == 0, run.stderr[-3000:]
    # the pool's per-round line: with the round lines (no live bar off a terminal) and in run.log
    assert "2 nodes" in run.stdout and "2 nodes" in (tmp_path / "ray" / "run.log").read_text()
    (m,) = [json.loads(x) for x in (tmp_path / "ray" / "metrics.jsonl").read_text().splitlines()]
    assert m["ray_nodes"] == 2 and m["contributors"] == 3 and m["protocol"] == "secagg"
    a = load_file(str(tmp_path / "plain" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "ray" / "adapter" / "adapter_model.safetensors"))
    # FedAvg moves x by sum(w_i delta_i) / sum(w_i); secagg errs by < error_bound on the weighted sum
    # (one quantization step per party), so by < error_bound / total weight on the adapter.
    total = sum(json.loads((tmp_path / "plain" / "summary.json").read_text())["party_sizes"].values())
    bound = m["protocol_error_bound"] / total + 1e-7  # + float32 rounding of x + mean delta
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert 0 < worst <= bound, (worst, bound)
