"""Helpers for the multi-process deployment tests: free ports, provisioning, bounded process groups,
and the in-process expected result (protocols.driver.run_round with the same inputs and materials)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from securefed.deploy.coordinator import run_server
from securefed.deploy.kit import load_party_kit, load_server_kit
from securefed.deploy.localrun import free_port
from securefed.deploy.party import run_client
from securefed.deploy.protocol_only import (
    ProtocolOnlyClientApp,
    ProtocolOnlyServerApp,
    decode_state,
    protocol_only_input,
)
from securefed.deploy.provision import FederationPaths, provision_federation
from securefed.protocols.base import RoundContext
from securefed.protocols.driver import run_round

HOST = "127.0.0.1"


def fast_settings(**over: Any) -> dict[str, Any]:
    """Short timeouts so failure paths resolve in about a second."""
    timeouts = {"quorum_s": 30.0, "gather_s": 0.3, "train_s": 10.0, "stage_s": 10.0, "linger_s": 1.0,
                "connect_s": 5.0, "backoff_initial_s": 0.1, "backoff_max_s": 0.5, "max_connect_attempts": 200}
    timeouts.update(over.pop("timeouts", {}))
    app = {"vector_len": 8, "seed": 7}
    app.update(over.pop("app", {}))
    return {"port": free_port(), "rounds": 2, "timeouts": timeouts, "app": app, **over}


def provision(root: Path, parties: Sequence[str], protocol: str = "plain", config: Any = None,
              **settings: Any) -> FederationPaths:
    return provision_federation(root, list(parties), HOST, protocol, config, fast_settings(**settings))


class Procs:
    """Every process a test starts; all are killed (by pid) at teardown, none outlives the test."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, *args: str, log_level: str = "INFO") -> subprocess.Popen:
        out = open(self.logdir / f"{name}.out", "ab")
        err = open(self.logdir / f"{name}.err", "ab")
        p = subprocess.Popen([sys.executable, "-m", "securefed.deploy", "--log-level", log_level, *args],
                             stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        out.close()
        err.close()
        self.procs[name] = p
        return p

    def server(self, fed: FederationPaths, name: str = "server") -> subprocess.Popen:
        return self.start(name, "server", str(fed.server_dir))

    def client(self, fed: FederationPaths, pid: str, *extra: str, name: str | None = None,
               log_level: str = "INFO") -> subprocess.Popen:
        return self.start(name or pid, "client", str(fed.party_dirs[pid]), "--final",
                          str(self.logdir / f"{pid}.final"), *extra, log_level=log_level)

    def wait(self, name: str, timeout: float) -> int:
        try:
            return self.procs[name].wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{name} did not finish in {timeout}s\n{self.tail(name)}") from None

    def kill(self, name: str) -> None:
        p = self.procs[name]
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait(10)

    def tail(self, name: str) -> str:
        path = self.logdir / f"{name}.err"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def kill_all(self) -> None:
        for name in list(self.procs):
            self.kill(name)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def server_state(fed: FederationPaths) -> dict[str, Any]:
    """The protocol-only server state from the coordinator's checkpoint."""
    from securefed.deploy.checkpoint import load_checkpoint

    cp = load_checkpoint(fed.server_dir / "state" / "checkpoint.bin", fed.config.federation_id)
    if cp is None:
        raise AssertionError("no checkpoint written")
    return {"last_round": cp.last_round, **decode_state(cp.state)}


def metrics(fed: FederationPaths) -> list[dict[str, Any]]:
    path = fed.server_dir / "state" / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def expected_sums(fed: FederationPaths, rounds: Mapping[int, Sequence[str]],
                  drop_at: Mapping[int, Mapping[str, str]] | None = None) -> tuple[np.ndarray, float]:
    """Sum over rounds of protocols.driver.run_round, with the kits' own materials and the
    protocol-only inputs. rounds: round -> selected party ids."""
    kit = load_server_kit(fed.server_dir)
    protocol, server_material = kit.protocol_and_material()
    party_material = {pid: load_party_kit(d).protocol_and_material()[1] for pid, d in fed.party_dirs.items()}
    app = fed.config.app
    total, weight = np.zeros(app["vector_len"]), 0.0
    for r, selected in rounds.items():
        ctx = round_context(fed, r, selected)
        inputs = {pid: protocol_only_input(app["seed"], pid, r, ctx) for pid in ctx.party_ids}
        result, _ = run_round(protocol, ctx, inputs, server_material, party_material,
                              drop_at=(drop_at or {}).get(r))
        total += result.delta_sum
        weight += result.total_weight
    return total, weight


def round_context(fed: FederationPaths, r: int, selected: Sequence[str]) -> RoundContext:
    app = fed.config.app
    return RoundContext(fed.config.federation_id, r, tuple(sorted(selected)), app["vector_len"],
                        bool(app.get("has_control", False)), int(app.get("max_weight", 1000)))


def stage_names(fed: FederationPaths, selected: Sequence[str]) -> list[str]:
    """The stages a round goes through (from an in-process dry run)."""
    kit = load_server_kit(fed.server_dir)
    protocol, server_material = kit.protocol_and_material()
    party_material = {pid: load_party_kit(d).protocol_and_material()[1] for pid, d in fed.party_dirs.items()}
    ctx = round_context(fed, 0, selected)
    inputs = {pid: protocol_only_input(fed.config.app["seed"], pid, 0, ctx) for pid in ctx.party_ids}
    _, traffic = run_round(protocol, ctx, inputs, server_material, party_material)
    return traffic.stages


class _Recorder:
    """Wraps a protocol so that the stages one party handles are recorded, in order."""

    def __init__(self, protocol: Any, victim: str) -> None:
        self.protocol, self.victim, self.handled = protocol, victim, []

    def party(self, ctx, pid, data, material):  # noqa: ANN001
        session = self.protocol.party(ctx, pid, data, material)
        if pid != self.victim:
            return session
        rec = self

        class Session:
            def handle(self, message):  # noqa: ANN001
                rec.handled.append(message.stage)
                return session.handle(message)

        return Session()

    def server(self, ctx, material):  # noqa: ANN001
        return self.protocol.server(ctx, material)


def pick_drop(fed: FederationPaths, selected: Sequence[str], victim: str) -> tuple[int, str]:
    """(call, stage): a stage `victim` really handles, preferably a middle one, at which it can vanish without the in-process round aborting. call: 1-based index of that
    message among those the victim handles."""
    from securefed.protocols.base import ProtocolAbort

    kit = load_server_kit(fed.server_dir)
    protocol, server_material = kit.protocol_and_material()
    party_material = {pid: load_party_kit(d).protocol_and_material()[1] for pid, d in fed.party_dirs.items()}
    ctx = round_context(fed, 0, selected)
    inputs = {pid: protocol_only_input(fed.config.app["seed"], pid, 0, ctx) for pid in ctx.party_ids}
    rec = _Recorder(protocol, victim)
    run_round(rec, ctx, inputs, server_material, party_material)
    handled = rec.handled
    # Prefer the middle stage: for masking protocols that is after keys were shared and before the
    # masked input, the case that needs the protocol's recovery.
    mid = len(handled) // 2
    for i in [mid] + [j for j in range(1, len(handled)) if j != mid] + [0]:
        protocol = kit.protocol_and_material()[0]  # a fresh one: secagg parties never redo a round
        try:
            run_round(protocol, ctx, inputs, server_material, party_material, drop_at={victim: handled[i]})
        except ProtocolAbort:
            continue
        return handled.index(handled[i]) + 1, handled[i]
    raise AssertionError("no stage at which a dropout is survivable")


def run_inprocess(fed: FederationPaths, hooks: Mapping[str, Any] | None = None, timeout: float = 60.0) -> dict:
    """Coordinator and parties of `fed` as threads of this process (protocol-only apps); hooks: party
    id -> SessionHook. Returns each role's result; fails if any raised or did not finish."""
    parties = sorted(fed.party_dirs)
    results: dict[str, object] = {}

    def target(name, fn):
        try:
            results[name] = fn()
        except BaseException as e:  # noqa: BLE001 - reported below
            results[name] = e

    threads = [threading.Thread(target=target, args=("server", lambda: run_server(fed.server_dir, ProtocolOnlyServerApp)),
                                daemon=True)]
    for pid in parties:
        hook = (hooks or {}).get(pid)
        threads.append(threading.Thread(target=target, daemon=True, args=(pid, lambda d=fed.party_dirs[pid], h=hook: run_client(
            d, lambda f, p: ProtocolOnlyClientApp(f, p), session_hook=h))))
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.1, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "federation did not finish in time"
    for name, r in results.items():
        assert not isinstance(r, BaseException), f"{name}: {r!r}"
    return results


def provision_across(root: Path, parties: Sequence[str], protocol: str, requests: Mapping[str, Path],
                     config: Any = None, settings: Mapping[str, Any] | None = None) -> FederationPaths:
    """Provisioning from the parties' request folders, both passes: the operator's roster.json, each
    party's `keygen --finish` in its keys folder (the request folder's parent), the kits."""
    from securefed.deploy.keygen import keygen_finish
    from securefed.deploy.provision import KeygenPhasePending

    settings = dict(settings or fast_settings())
    try:
        return provision_federation(root, list(parties), HOST, protocol, config, settings, requests=requests)
    except KeygenPhasePending as e:
        for req in requests.values():
            keygen_finish(Path(req).parent, e.roster, protocol, config)
    return provision_federation(root, list(parties), HOST, protocol, config, settings, requests=requests)
