"""Churn on loopback: a coordinator and N protocol-only party processes, with a share of the invited
parties killed every round at a random protocol stage (os._exit, like kill -9) and restarted, so they
rejoin later rounds from their kits (secagg's round ledger included).

Protocol-agnostic: the stage a victim dies at is drawn from 1..stages (the protocol's stage count:
secagg 5 = advertise, share, masked input (before upload), consistency (after upload), unmask;
threshold he 3 = input, sign, decrypt). Checks, per completed round, that the sum equals
the sum of its contributors' inputs within the protocol's quantisation bound; samples memory of every
process; scans every log for an unhandled exception. Used by benchmarks/churn.py and a scaled-down
test. Every process started here is killed (by its own pid) before returning.
"""

from __future__ import annotations

import random
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from securefed.deploy.localrun import load_metrics, provision_local
from securefed.deploy.protocol_only import protocol_only_input
from securefed.deploy.provision import FederationPaths
from securefed.protocols.base import RoundContext

STAGES = {"secagg": 5, "he": 3, "plain": 1}
KILLED_RC = 3  # protocol_only._CrashingSession's exit status


@dataclass
class ChurnRun:
    federation: FederationPaths
    protocol: str
    wall_s: float
    server_rc: int | None
    rounds: list[dict[str, Any]]  # metrics.jsonl lines
    kills: list[tuple[str, int]] = field(default_factory=list)  # (party, planned round) of each death
    final_rcs: dict[str, int | None] = field(default_factory=dict)  # last instance of each party
    odd_exits: list[str] = field(default_factory=list)  # instances that died other than as planned
    tracebacks: list[str] = field(default_factory=list)  # log files holding an unhandled exception
    late: list[str] = field(default_factory=list)  # restarted after the last round began, still dialling
    logged_errors: int = 0  # level=ERROR lines (handled: the process went on)
    server_rss_mib: float = 0.0
    party_rss_mib: list[float] = field(default_factory=list)  # peak per party process
    party_pss_mib: list[float] = field(default_factory=list)
    sum_errors: list[dict[str, Any]] = field(default_factory=list)  # per completed round

    def figures(self) -> dict[str, Any]:
        ok = [r for r in self.rounds if r["status"] == "ok"]
        per_round = {r["round"]: r for r in ok}
        return {
            "protocol": self.protocol, "parties": len(self.federation.party_dirs),
            "rounds_completed": len(per_round), "attempts": len(self.rounds),
            "rounds_rejected": len({r["round"] for r in self.rounds if r["status"] == "rejected"}),
            "contributors_per_round": [len(per_round[r]["contributors"]) for r in sorted(per_round)],
            "round_s": [round(per_round[r]["durations"]["total_s"], 2) for r in sorted(per_round)],
            "kills": len(self.kills), "wall_s": round(self.wall_s, 1), "server_rc": self.server_rc,
            "sums_within_bound": all(e["ok"] for e in self.sum_errors) and len(self.sum_errors) == len(per_round),
            "max_sum_error_over_bound": max((e["error"] / e["bound"] for e in self.sum_errors), default=None),
            "coordinator_rss_mib": round(self.server_rss_mib, 1),
            "party_rss_mib_median": _med(self.party_rss_mib), "party_pss_mib_median": _med(self.party_pss_mib),
            "unhandled_exceptions": len(self.tracebacks), "logged_errors": self.logged_errors,
            "odd_exits": len(self.odd_exits), "late": len(self.late),
            "final_unplanned_rcs": sum(rc not in (0, None, KILLED_RC) for rc in self.final_rcs.values()),
        }


def _med(xs: list[float]) -> float | None:
    return round(statistics.median(xs), 1) if xs else None


def _mem_mib(pid: int) -> tuple[float, float]:
    """(RSS, PSS) of a live process in MiB; (0, 0) once it is gone."""
    rss = pss = 0.0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("Pss:"):
                pss = int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return rss, pss


def kill_plan(parties: list[str], rounds: int, fraction: float, stages: int, seed: int) -> dict[str, list[tuple[int, int]]]:
    """party -> [(round, stage call)]: each round, `fraction` of the parties die at a random stage."""
    rng = random.Random(seed)
    plan: dict[str, list[tuple[int, int]]] = {p: [] for p in parties}
    for r in range(rounds):
        for pid in rng.sample(parties, round(fraction * len(parties))):
            plan[pid].append((r, rng.randint(1, stages)))
    return plan


def run_churn(root: str | Path, n_parties: int, *, rounds: int = 10, kill_fraction: float = 0.2,
              protocol: str = "secagg", protocol_config: Any = None, vector_len: int = 64, seed: int = 0,
              timeout_s: float = 900.0, stage_s: float = 30.0) -> ChurnRun:
    root = Path(root)
    fed, parties = provision_local(root, n_parties, rounds=rounds, vector_len=vector_len, protocol=protocol,
                                   protocol_config=protocol_config, timeout_s=timeout_s, stage_s=stage_s,
                                   min_parties=max(1, n_parties - n_parties // 10), record_sums=True,
                                   max_round_retries=5)
    plan = kill_plan(parties, rounds, kill_fraction, STAGES.get(protocol, 1), seed)
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    run = ChurnRun(fed, protocol, 0.0, None, [])
    procs: dict[str, subprocess.Popen] = {}
    instance: dict[str, int] = {p: 0 for p in parties}
    peak: dict[str, tuple[float, float]] = {}
    seen: set[tuple[str, int]] = set()  # (party, instance) whose exit was handled

    def spawn(name: str, *args: str) -> None:
        with open(logs / f"{name}.log", "ab") as log:
            procs[name] = subprocess.Popen([sys.executable, "-m", "securefed.deploy", "--log-level", "WARNING", *args],
                                           stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def spawn_party(pid: str) -> None:
        extra: list[str] = []
        if plan[pid]:
            r, call = plan[pid][0]
            extra = ["--crash-round", str(r), "--crash-call", str(call)]
        instance[pid] += 1
        spawn(pid, "client", str(fed.party_dirs[pid]), *extra)

    t0 = time.monotonic()
    try:
        spawn("server", "server", str(fed.server_dir))
        for pid in parties:
            spawn_party(pid)
        deadline, samples = t0 + timeout_s, 0
        while time.monotonic() < deadline:
            server_done = procs["server"].poll() is not None
            for pid in parties:
                p = procs[pid]
                rc = p.poll()
                if rc is None:
                    if samples % 4 == 0:
                        rss, pss = _mem_mib(p.pid)
                        old = peak.get(pid, (0.0, 0.0))
                        peak[pid] = (max(old[0], rss), max(old[1], pss))
                    continue
                if (pid, instance[pid]) in seen:
                    continue
                seen.add((pid, instance[pid]))
                if rc == KILLED_RC and plan[pid]:
                    killed_in = plan[pid].pop(0)[0]
                    run.kills.append((pid, killed_in))
                    if not server_done:  # it comes back for a retry or a later round (or too late: `late`)
                        spawn_party(pid)
                elif rc != 0:
                    run.odd_exits.append(f"{pid}#{instance[pid]} rc={rc}")
            run.server_rss_mib = max(run.server_rss_mib, _mem_mib(procs["server"].pid)[0])
            if server_done and all(procs[p].poll() is not None for p in parties):
                break
            if server_done and not run.wall_s:
                run.wall_s = time.monotonic() - t0
            if server_done and time.monotonic() - t0 > run.wall_s + 20.0:
                break  # 20 s after the coordinator's exit: whoever still dials came back too late
            samples += 1
            time.sleep(0.25)
        run.wall_s = run.wall_s or time.monotonic() - t0
        run.server_rc = procs["server"].poll()
        run.final_rcs = {pid: procs[pid].poll() for pid in parties}
        run.late = [pid for pid, rc in run.final_rcs.items() if rc is None]
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(10)
    run.rounds = load_metrics(fed)
    # Every round starts once 90% of the parties are connected (restarted victims reconnect within
    # seconds); an aborted attempt is retried up to 5 times, as a deployment would configure churn.
    for f in sorted(logs.glob("*.log")):
        lines = f.read_text(errors="replace").splitlines()
        run.logged_errors += sum("level=ERROR" in ln for ln in lines)
        # a traceback a process logged with its error line is handled; any other one is not
        if any(ln.startswith("Traceback") and (i == 0 or "level=ERROR" not in lines[i - 1])
               for i, ln in enumerate(lines)):
            run.tracebacks.append(f.name)
    run.party_rss_mib = [v[0] for v in peak.values() if v[0]]
    run.party_pss_mib = [v[1] for v in peak.values() if v[1]]
    run.sum_errors = check_round_sums(fed, run.rounds)
    return run


def check_round_sums(fed: FederationPaths, rounds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each completed round's decoded sum against the exact sum of its contributors' (clipped,
    weighted) inputs; the bound is n x one quantisation step of the protocol (plain: float error)."""
    app, cfg = fed.config.app, fed.config.protocol_config or {}
    clip, bits = float(cfg.get("clip", 1.0)), int(cfg.get("precision_bits", 16))
    step = 0.0 if fed.config.protocol == "plain" else clip / 2**bits
    out = []
    for rec in rounds:
        if rec["status"] != "ok" or "delta_sum" not in rec.get("app", {}):
            continue
        r, who = rec["round"], rec["contributors"]
        ctx = RoundContext(fed.config.federation_id, r, tuple(sorted(rec["selected"])), int(app["vector_len"]),
                           bool(app.get("has_control", False)), int(app.get("max_weight", 1000)))
        want, weight = np.zeros(ctx.vector_len), 0.0
        for pid in who:
            x = protocol_only_input(int(app["seed"]), pid, r, ctx)
            d = x.delta.astype(np.float64)
            want += x.weight * (d if step == 0 else np.clip(d, -clip, clip))
            weight += x.weight
        got = np.asarray(rec["app"]["delta_sum"])
        error = float(np.max(np.abs(got - want)))
        bound = len(who) * step + 1e-6 * max(1.0, float(np.max(np.abs(want))))
        out.append({"round": r, "contributors": len(who), "error": error, "bound": bound,
                    "ok": error <= bound and abs(rec["app"]["total_weight"] - weight) < 1e-6})
    return out
