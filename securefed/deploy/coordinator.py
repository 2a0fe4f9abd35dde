"""The coordinator: drives rounds over the hub with the in-process driver's semantics.

Per round attempt: wait for a quorum of connected parties, let the app select, send ROUND_START
(context + global payload), collect READY within train_s, then run the protocol's server session:
every stage's Messages go to the parties still in, replies are collected within stage_s. A party
that does not answer in time, whose stream ends, or that reports its session failed is a dropout
from then on; one that answers NOREPLY (its session returned None) is not, exactly like
`protocols.driver.run_round`. ProtocolAbort (from the protocol, or no quorum) aborts the attempt;
the round is retried up to max_round_retries times. After each completed round the app state is
checkpointed atomically; a restarted coordinator resumes after the last completed round.

Rounds are 0-based in code, on the wire and in the transport log state/metrics.jsonl; every line a
person reads (logs, console, status, the run rows) counts them from 1, as the simulation does.
Only sizes, counts and durations are logged or written to metrics: never a payload. The server folder doubles as a
run directory (run_record.py: metrics.jsonl of aggregates, summary.json) for `report` and `status`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import grpc

from securefed.atomic import atomic_write_text
from securefed.deploy.apps import ServerApp, ServerAppFactory
from securefed.deploy.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from securefed.deploy.kit import load_server_kit
from securefed.deploy.provision import OPERATOR_NAME
from securefed.deploy.roster import membership_of
from securefed.deploy.run_record import RunRecord
from securefed.deploy.settings import FederationConfig
from securefed.deploy.wire import encode_round_end, encode_round_start
from securefed.errors import ConfigError
from securefed.protocols.base import (
    Message,
    ProtocolAbort,
    ProtocolError,
    RoundSpent,
    SumOutOfRange,
    VectorSum,
    check_sum,
)
from securefed.transport.frames import Kind
from securefed.transport.logfmt import kv
from securefed.transport.server import Hub, Link, grpc_options
from securefed.transport.tls import server_credentials

MAX_STAGES = 64  # no protocol has more; bounds the stage loop even for a buggy server session
_log = logging.getLogger("securefed.deploy.coordinator")


class RoundFailed(Exception):
    """Every attempt of a round aborted; the federation stops (the checkpoint stays valid)."""


@dataclass(frozen=True)
class ServerSummary:
    federation_id: str
    rounds_completed: int  # completed rounds in total, including those before a restart
    resumed_after: int | None  # last completed round found in the checkpoint at start
    checkpoint_path: Path
    metrics_path: Path


class Coordinator:
    def __init__(self, fed: FederationConfig, hub: Hub, app: ServerApp, protocol: Any, material: Any,
                 state_dir: Path, on_round: Callable[[dict[str, Any]], None] | None = None,
                 run_dir: Path | None = None) -> None:
        self.fed, self.hub, self.app = fed, hub, app
        self.on_round = on_round  # progress display: called with each completed round's record
        self.protocol, self.material = protocol, material
        self.checkpoint_path = state_dir / "checkpoint.bin"
        self.metrics_path = state_dir / "metrics.jsonl"
        state_dir.mkdir(parents=True, exist_ok=True)
        self.run_record = RunRecord(run_dir, fed) if run_dir is not None else None  # report/status-readable rows
        self.round = -1
        self.attempt = 0
        self.phase = "starting"
        self.completed = 0
        self._live: dict[str, Link] = {}  # links of the selected parties of the current attempt
        self._dropped: set[str] = set()  # invited parties out of the current attempt
        self.membership = membership_of(fed)  # the invited set of each round, as every party derives it

    def status(self) -> dict[str, Any]:
        bytes_in, bytes_out = self.hub.traffic()
        return {
            "federation_id": self.fed.federation_id, "protocol": self.fed.protocol, "phase": self.phase,
            # 1-based as on the console and in the logs: the round in progress (0: none started yet)
            "round": self.round + 1, "attempt": self.attempt, "rounds": self.fed.rounds,
            "rounds_completed": self.completed, "connected": sorted(self.hub.connected()),
            "bytes_in": sum(bytes_in.values()), "bytes_out": sum(bytes_out.values()),
            "rejected_streams": self.hub.rejected, "refused_certificates": self.hub.refused, "stale_messages": self.hub.stale,
            # aggregates only (run_record.py): what the global model already tells every party, and less
            **({"last_round_metrics": rows[-1]} if self.run_record is not None and (rows := self.run_record.rows()) else {}),
        }

    def run(self) -> ServerSummary:
        cp = load_checkpoint(self.checkpoint_path, self.fed.federation_id)
        first = 0
        self._drop_metrics_after(-1 if cp is None else cp.last_round)
        if self.run_record is not None:
            self.run_record.start(-1 if cp is None else cp.last_round)
        t0 = time.monotonic()
        if cp is not None:
            self.app.load_state(cp.state)
            first = cp.last_round + 1
            self.completed = first
            _log.info(kv("resumed", rounds_done=cp.last_round + 1))
        for r in range(first, self.fed.rounds):
            self._round_with_retries(r)
        self.phase = "finishing"
        self.hub.finish(self.app.global_payload(self.fed.rounds))
        self.hub.wait_farewell(set(self.fed.party_ids), self.fed.timeouts.linger_s)
        self.phase = "finished"
        if self.run_record is not None:
            self.run_record.finish({"rounds_completed": self.completed, "seconds_this_run": time.monotonic() - t0,
                             "resumed_after": None if cp is None else cp.last_round + 1})
        _log.info(kv("finished", rounds=self.completed))
        return ServerSummary(self.fed.federation_id, self.completed, None if cp is None else cp.last_round,
                             self.checkpoint_path, self.metrics_path)

    def _round_with_retries(self, r: int) -> None:
        for attempt in range(self.fed.max_round_retries + 1):
            self.round, self.attempt = r, attempt
            record: dict[str, Any] = {"round": r, "attempt": attempt}
            t0 = time.monotonic()
            before = self.hub.traffic()
            self._live, self._dropped = {}, set()
            try:
                result, app_metrics = self._attempt(r, attempt, record)
            except RoundSpent as e:
                # Parties have unmasked this round (an out-of-range sum, or shares that did not
                # reconstruct), or (threshold he) its signed contributor set failed its one retry:
                # its inputs must not be summed again under another survivor set (the difference of
                # two sums is one party's update), and the parties refuse to. The round is skipped
                # (nothing applied), not retried.
                record.update(status="rejected", reason=str(e)[:200])
                self._end(self._live, r, attempt, "aborted", record, before, t0)
                if self.run_record is not None:
                    self.run_record.add(record)
                save_checkpoint(self.checkpoint_path, Checkpoint(self.fed.federation_id, r, self.app.state_bytes()))
                self.completed = r + 1
                _log.warning(kv("round_rejected", round=r + 1, attempt=attempt, reason=str(e)[:200]))
                return
            except ProtocolAbort as e:
                record.update(status="aborted", reason=str(e)[:200])
                self._end(self._live, r, attempt, "aborted", record, before, t0)
                _log.warning(kv("round_aborted", round=r + 1, attempt=attempt, reason=str(e)[:200]))
                continue
            record.update(status="ok", contributors=list(result.contributors), app=app_metrics)
            excluded = list(result.stats.get("excluded", ()))
            if excluded:  # e.g. threshold he: a decryptor whose answers did not decode; the round finished without it
                record["excluded"] = excluded
                _log.warning(kv("party_excluded", round=r, attempt=attempt, parties=",".join(excluded),
                                reason="its answers did not decode"))
            # The round's metrics line goes first, then the checkpoint: a crash between the two leaves
            # a line past the checkpoint, which a restart drops (_drop_metrics_after) before redoing it.
            self._record(record, before, t0)
            if self.run_record is not None:
                self.run_record.add(record)
            save_checkpoint(self.checkpoint_path, Checkpoint(self.fed.federation_id, r, self.app.state_bytes()))
            self.completed = r + 1
            self._send_round_end(self._live, r, attempt, "ok")
            _log.info(kv("round_done", round=r + 1, attempt=attempt, contributors=len(result.contributors),
                         seconds=round(record["durations"]["total_s"], 3)))
            if self.on_round is not None:
                self.on_round(record)
            return
        raise RoundFailed(f"round {r} aborted {self.fed.max_round_retries + 1} times; stopping (checkpoint kept)")

    def _attempt(self, r: int, attempt: int, record: dict[str, Any]) -> tuple[VectorSum, dict[str, Any]]:
        fed, t = self.fed, self.fed.timeouts
        self.phase = "waiting_for_parties"
        links = self.hub.wait_connected(fed.min_parties, t.quorum_s, t.gather_s, set(fed.party_ids))
        if len(links) < fed.min_parties:
            raise ProtocolAbort(f"quorum not reached: {len(links)} of {fed.min_parties} parties connected")
        # The invited set is derived from the roster (parties refuse any other); the server only
        # decides whom of it to start: the connected ones the app admits. The rest are dropouts.
        invited = self.membership.invited(r)
        available = tuple(p for p in invited if p in links)
        selected = tuple(sorted(self.app.select(r, available))) if available else ()
        if not set(selected) <= set(available) or len(set(selected)) != len(selected):
            raise ValueError("ServerApp.select must return a subset of the invited, connected parties")
        ctx = self.app.round_context(r, invited)
        if ctx.federation_id != fed.federation_id or ctx.round != r or ctx.party_ids != invited:
            raise ValueError("ServerApp.round_context disagrees with the federation, round or invited set")
        # protocols bind their transcript to the attempt; min_contributors: the survivors' floor
        ctx = self.membership.check(dataclasses.replace(ctx, attempt=attempt))
        live = self._live = {pid: links[pid] for pid in selected}
        record["selected"] = list(invited)  # the round's invited set (what its protocol context holds)
        record["started"] = list(selected)  # those sent ROUND_START; the other invited ones are dropouts
        self._dropped.update(set(invited) - set(selected))
        if len(selected) < ctx.min_contributors:
            raise ProtocolAbort(f"{len(selected)} of {len(invited)} invited parties can start, below "
                                f"min_round_size={ctx.min_contributors}")

        # Training: one READY per selected party within train_s.
        self.phase = "training"
        start = encode_round_start(ctx, self.app.global_payload(r))
        if len(start) > fed.max_message_bytes:
            raise ConfigError(f"the global payload ({len(start)} bytes) exceeds max_message_bytes={fed.max_message_bytes}")
        t_train = time.monotonic()
        self.hub.expect(r, attempt, 0, live)
        for pid, link in live.items():
            self.hub.send(link, Kind.ROUND_START, round=r, attempt=attempt, step=0, data=start)
        ready = {p for p, env in self.hub.wait_replies(t.train_s).items() if env.kind == Kind.READY}
        dropped = self._dropped
        dropped.update(set(invited) - ready)
        record["durations"] = {"train_s": time.monotonic() - t_train}

        self.phase = "aggregating"
        stages: list[dict[str, Any]] = []
        record["stages"] = stages
        try:
            session = self.protocol.server(ctx, self.material)
            outbound = session.start()
            for step in range(1, MAX_STAGES + 1):
                # Messages a finished session still sends (e.g. the result) are delivered, but as
                # in the driver their answers are not used, so nobody waits for them.
                # The session's bound on this stage's replies (optional hook): a bigger reply is
                # dropped by the hub before it is buffered.
                bound = getattr(session, "max_reply_bytes", None)
                replies = self._stage(r, attempt, step, outbound, live, dropped, stages, wait=not session.done,
                                      max_reply_bytes=bound() if callable(bound) else None)
                if session.done:
                    break
                outbound = session.step(replies)
                if session.done and not outbound:
                    break
            else:
                raise ProtocolAbort("protocol exceeded the stage limit")
            result = session.result()
        except (ProtocolError, ValueError) as e:
            # A server session that cannot go on (or cannot serve this selection) is an abort of
            # this attempt, not a crash of the federation.
            raise ProtocolAbort(f"protocol failed: {type(e).__name__}") from None
        # a party's out-of-range encoding or unclipped update stops here, before the app (optional app
        # hook `sum_bound`: the parties' clipping, securefed.robust.bounds.InputBound)
        check_sum(result, ctx, getattr(self.app, "sum_bound", None))
        self.phase = "applying"
        try:
            return result, self.app.apply(r, result)
        except (ValueError, FloatingPointError) as e:
            raise SumOutOfRange(f"the app refused the sum: {str(e)[:160]}") from None

    def _stage(self, r: int, attempt: int, step: int, outbound: dict[str, Message], live: dict[str, Link],
               dropped: set[str], stages: list[dict[str, Any]], wait: bool = True,
               max_reply_bytes: int | None = None) -> dict[str, Message]:
        targets = {p: m for p, m in outbound.items() if p in live and p not in dropped}
        t0 = time.monotonic()
        self.hub.expect(r, attempt, step, {p: live[p] for p in targets} if wait else {}, max_reply_bytes)
        for pid, msg in targets.items():
            self.hub.send(live[pid], Kind.STAGE, round=r, attempt=attempt, step=step, stage=msg.stage,
                          data=msg.payload)
        if not wait:
            stages.append({"step": step, "stage": ",".join(sorted({m.stage for m in targets.values()})),
                           "sent": len(targets), "replies": 0, "seconds": time.monotonic() - t0})
            return {}
        got = self.hub.wait_replies(self.fed.timeouts.stage_s) if targets else {}
        replies: dict[str, Message] = {}
        for pid in targets:
            env = got.get(pid)
            if env is None or env.kind == Kind.DROPPED:
                dropped.add(pid)  # silent past the timeout, disconnected, or its session failed
            elif env.kind == Kind.REPLY:
                replies[pid] = Message(env.stage, env.data)
            # NOREPLY: the session had nothing to send; not a dropout (as in the driver).
        names = sorted({m.stage for m in targets.values()})
        stages.append({"step": step, "stage": ",".join(names), "sent": len(targets), "replies": len(replies),
                       "seconds": time.monotonic() - t0})
        return replies

    def _end(self, links: dict[str, Link], r: int, attempt: int, status: str, record: dict[str, Any],
             before: tuple[dict[str, int], dict[str, int]], t0: float) -> None:
        self._send_round_end(links, r, attempt, status)
        self._record(record, before, t0)

    def _send_round_end(self, links: dict[str, Link], r: int, attempt: int, status: str) -> None:
        for link in links.values():
            self.hub.send(link, Kind.ROUND_END, round=r, attempt=attempt, data=encode_round_end(status))

    def _record(self, record: dict[str, Any], before: tuple[dict[str, int], dict[str, int]], t0: float) -> None:
        """Append the attempt's metrics line: sizes, counts and durations only, never payloads."""
        after = self.hub.traffic()
        record["dropouts"] = sorted(self._dropped)
        record.setdefault("durations", {})["total_s"] = time.monotonic() - t0
        record["bytes_in"] = {p: n - before[0].get(p, 0) for p, n in after[0].items() if n != before[0].get(p, 0)}
        record["bytes_out"] = {p: n - before[1].get(p, 0) for p, n in after[1].items() if n != before[1].get(p, 0)}
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"time": time.time(), **record}, sort_keys=True, default=str) + "\n")

    def _drop_metrics_after(self, last_round: int) -> None:
        """Keep the metrics of checkpointed rounds only: lines past the checkpoint belong to a round
        the restarted coordinator is about to run again."""
        if not self.metrics_path.exists():
            return
        lines = self.metrics_path.read_text(encoding="utf-8").splitlines()
        kept = [line for line in lines if line.strip() and json.loads(line)["round"] <= last_round]
        atomic_write_text(self.metrics_path, "".join(line + "\n" for line in kept))


def run_server(
    federation_dir: str | Path,
    server_app_factory: ServerAppFactory,
    *,
    bind: str | None = None,
    state_dir: str | Path | None = None,
    on_round: Callable[[dict[str, Any]], None] | None = None,
) -> ServerSummary:
    """Serve one federation from its server folder until every round is done.

    bind: listen address (default: server_host:port from federation.json). state_dir: checkpoint
    and metrics.jsonl (default: <federation_dir>/state). Raises RoundFailed when a round aborts
    more than max_round_retries times, ConfigError for a bad kit."""
    kit = load_server_kit(federation_dir)
    fed = kit.federation
    protocol, material = kit.protocol_and_material()
    app = server_app_factory(fed)
    hub = Hub(
        federation_id=fed.federation_bytes,
        parties={p.cert_sha256: p.id for p in fed.parties},
        observers={fed.operator_cert_sha256: OPERATOR_NAME},
        limits=fed.limits,
    )
    coordinator = Coordinator(fed, hub, app, protocol, material,
                              Path(state_dir) if state_dir else kit.dir / "state", on_round, run_dir=kit.dir)
    hub.status_provider = coordinator.status
    # Each open party stream holds one worker for its lifetime; the spare ones serve Status and
    # reconnects that overlap a not-yet-noticed dead stream.
    workers = len(fed.parties) + 8
    server = grpc.server(ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rpc"),
                         handlers=[hub.handler()], options=grpc_options(fed.limits),
                         maximum_concurrent_rpcs=workers)
    address = bind or fed.address
    if server.add_secure_port(address, server_credentials(kit.tls)) == 0:
        raise ConfigError(f"cannot listen on {address}")
    server.start()
    _log.info(kv("listening", address=address, federation=fed.federation_id, protocol=fed.protocol,
                 parties=len(fed.parties)))
    try:
        return coordinator.run()
    finally:
        server.stop(grace=1.0).wait(5.0)
