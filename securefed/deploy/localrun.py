"""A whole federation as real processes on 127.0.0.1: one coordinator, N parties, protocol-only apps.

Used by the load test and benchmarks/throughput.py. Every process started here is killed (by its
own pid) before returning, whatever happens; the run is bounded by `timeout_s`.
"""

from __future__ import annotations

import json
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from securefed.deploy.provision import FederationPaths, provision_federation


@dataclass(frozen=True)
class LocalRun:
    federation: FederationPaths
    wall_s: float  # from spawning the processes to the coordinator's exit
    server_rc: int
    party_rcs: dict[str, int]
    rounds: list[dict[str, Any]]  # metrics.jsonl lines

    def figures(self) -> dict[str, Any]:
        ok = [r for r in self.rounds if r["status"] == "ok"]
        steady = [r for r in ok if r["round"] > 0]  # round 0 includes waiting for everyone to connect
        stage_s = [s["seconds"] for r in steady for s in r["stages"]]
        per_round_in = [sum(r["bytes_in"].values()) for r in ok]
        per_round_out = [sum(r["bytes_out"].values()) for r in ok]
        steady_s = sum(r["durations"]["total_s"] for r in steady)
        return {
            "parties": len(self.federation.party_dirs),
            "rounds_ok": len(ok),
            "min_contributors": min((len(r["contributors"]) for r in ok), default=0),
            "wall_s": round(self.wall_s, 2),
            "first_round_s": round(ok[0]["durations"]["total_s"], 3) if ok else None,
            "steady_rounds_per_s": round(len(steady) / steady_s, 2) if steady_s else None,
            "bytes_in_per_round": int(statistics.mean(per_round_in)) if ok else 0,
            "bytes_out_per_round": int(statistics.mean(per_round_out)) if ok else 0,
            "train_phase_s_median": _median([r["durations"]["train_s"] for r in steady]),
            "stage_s_median": _median(stage_s),
            "stage_s_max": round(max(stage_s), 4) if stage_s else None,
        }


def _median(xs: list[float]) -> float | None:
    return round(statistics.median(xs), 4) if xs else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_local_federation(
    root: str | Path,
    n_parties: int,
    *,
    rounds: int = 3,
    vector_len: int = 64,
    protocol: str = "plain",
    protocol_config: Any = None,
    timeout_s: float = 120.0,
    chunk_size: int = 1 << 20,
) -> LocalRun:
    root = Path(root)
    fed, parties = provision_local(root, n_parties, rounds=rounds, vector_len=vector_len, protocol=protocol,
                                   protocol_config=protocol_config, timeout_s=timeout_s, chunk_size=chunk_size)
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    procs: dict[str, subprocess.Popen] = {}

    def spawn(name: str, *args: str) -> None:
        with open(logs / f"{name}.log", "wb") as log:
            procs[name] = subprocess.Popen([sys.executable, "-m", "securefed.deploy", "--log-level", "WARNING", *args],
                                           stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    t0 = time.monotonic()
    try:
        spawn("server", "server", str(fed.server_dir))
        for pid in parties:
            spawn(pid, "client", str(fed.party_dirs[pid]))
        deadline = t0 + timeout_s
        server_rc = procs["server"].wait(max(1.0, deadline - time.monotonic()))
        wall = time.monotonic() - t0
        party_rcs = {pid: procs[pid].wait(max(1.0, deadline - time.monotonic())) for pid in parties}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(10)
    return LocalRun(fed, wall, server_rc, party_rcs, load_metrics(fed))


def provision_local(root: Path, n_parties: int, *, rounds: int, vector_len: int, protocol: str,
                    protocol_config: Any, timeout_s: float, chunk_size: int = 1 << 20, stage_s: float = 60.0,
                    min_parties: int | None = None, record_sums: bool = False,
                    max_round_retries: int = 2) -> tuple[FederationPaths, list[str]]:
    """A loopback federation of protocol-only apps under root/fed (keys made here)."""
    parties = [f"party{i:03d}" for i in range(n_parties)]
    fed = provision_federation(root / "fed", parties, "127.0.0.1", protocol, protocol_config, {
        "port": free_port(), "rounds": rounds, "chunk_size": chunk_size, "min_parties": min_parties or n_parties,
        "max_round_retries": max_round_retries,
        "timeouts": {"quorum_s": timeout_s, "gather_s": 1.0, "train_s": 60.0, "stage_s": stage_s, "linger_s": 5.0,
                     "connect_s": 5.0, "backoff_initial_s": 0.2, "backoff_max_s": 2.0, "max_connect_attempts": 60},
        "app": {"vector_len": vector_len, "seed": 1, "record_sums": record_sums},
    })
    return fed, parties


def load_metrics(fed: FederationPaths) -> list[dict[str, Any]]:
    path = fed.server_dir / "state" / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
