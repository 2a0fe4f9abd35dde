"""The driver's side of the Ray backend: a pool of PartyWorker actors, the round's jobs handed to
whichever actor is free, and the protocol round driven stage by stage with the parties' answers
computed where their sessions live.

What moves between driver and actors: the global adapter (once per round, through the object
store), each job's records, client state (SCAFFOLD's c_i, a local adapter) and kit bytes, the
client state and loss back, and the protocol's Messages. The update itself never comes back: it
stays in the party's session on the actor, as it would stay on a party's machine.

Faults: an actor that dies is restarted by Ray (max_restarts); every update it held this round died
with it. Before the protocol starts such parties are trained again on a live actor (on_actor_failure
"retry", at most max_retries times) or left out (the protocol sees a dropout from its first stage);
once the protocol runs, a lost session is a dropout of that stage and the protocol's own dropout
handling decides whether the round completes.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter, deque
from typing import Any, Mapping

from securefed.algorithms.base import ClientState, ServerState
from securefed.deploy.material import encode_material
from securefed.errors import UserError
from securefed.protocols.base import Message, RoundContext, VectorSum
from securefed.protocols.driver import RoundTraffic, drive
from securefed.simulation.backends.worker import REFUSED, PartyJob, PartyWorker, RoundShared, TrainReply

# Test hook (fault injection): {(party_id, round_index): "train" | a protocol stage name}. The first
# time that party's job (or that stage of its session) reaches its actor, the actor's process exits.
FAULTS: dict[tuple[str, int], str] = {}
_LOST = object()


def _actor_lost_errors() -> tuple[type[BaseException], ...]:
    import ray.exceptions as rex

    return (rex.RayActorError,)  # ActorDiedError, ActorUnavailableError: the process is gone


class RayBackend:
    """The actor pool for one simulation; `train` returns the round's RemoteRound."""

    def __init__(self, world: Any) -> None:
        import logging

        import ray

        self.ray, self.world = ray, world
        rc = world.cfg.simulation.ray
        self.rc = rc
        self.started_ray = not ray.is_initialized()
        if self.started_ray:  # address None starts a local instance; "auto" joins the user's cluster
            ray.init(address=rc.address, logging_level=logging.WARNING)
        threads = rc.torch_threads or max(1, int(rc.num_cpus))
        cls = ray.remote(PartyWorker)
        cfg_json = world.cfg.to_json()
        self.actors = []
        for i in range(rc.actors):
            options: dict[str, Any] = dict(num_cpus=rc.num_cpus, num_gpus=rc.num_gpus, max_restarts=rc.max_restarts,
                                           max_task_retries=0)
            if rc.resources:
                options["resources"] = dict(rc.resources[i % len(rc.resources)])
            self.actors.append(cls.options(**options).remote(cfg_json, threads))
        try:  # each actor has loaded its model (or the cluster cannot place it: say so, do not hang)
            ray.get([a.ready.remote() for a in self.actors], timeout=rc.start_timeout)
        except ray.exceptions.GetTimeoutError:
            message = (f"simulation.ray: {rc.actors} actors of num_cpus={rc.num_cpus}, num_gpus={rc.num_gpus}, "
                       f"resources={rc.resources} were not all placed within {rc.start_timeout:g} s; "
                       f"the cluster has {ray.cluster_resources()}")
            self.shutdown()
            raise UserError(message) from None
        except ray.exceptions.RayActorError as e:  # its constructor raised (e.g. a model path missing on a node)
            self.shutdown()
            cause = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            raise UserError(f"simulation.ray: an actor could not start: {cause}") from None
        self.lost = _actor_lost_errors()
        self.dead: set[int] = set()  # actors past max_restarts: no more jobs

    def shutdown(self) -> None:
        for a in self.actors:
            self.ray.kill(a, no_restart=True)
        self.actors = []
        if self.started_ray:
            self.ray.shutdown()

    def train(self, world: Any, r: int, lr: float, selected: tuple[str, ...], server: ServerState,
              clients: Mapping[str, ClientState], progress: Any, task: Any) -> "RemoteRound":
        """Train the selected parties on the pool; returns once every one is trained (its update held
        by a live actor) or dropped."""
        round_ = RemoteRound(self, world, r)
        # the actors only encode inputs: the spend histories (which grow every round) stay here
        privacy = dataclasses.replace(world.privacy, ledger={}, server_ledger={}, _round_spends={}, _round_notes={})
        shared = self.ray.put(RoundShared(r, lr, dict(server.params), server.control, privacy))
        round_.run_jobs(shared, selected, clients, progress, task)
        return round_


class RemoteRound:
    """One round on the pool: who trained where, then the protocol driven over the actors."""

    def __init__(self, backend: RayBackend, world: Any, r: int) -> None:
        self.b, self.world, self.r = backend, world, r
        self.replies: dict[str, TrainReply] = {}
        self.where: dict[str, int] = {}  # pid -> index of the actor holding its update/session
        self.dropped: set[str] = set()
        self.attempts: Counter[str] = Counter()
        self.failures = self.retried = 0
        self.t0 = time.perf_counter()

    @property
    def pending(self) -> dict[str, ClientState]:
        return {p: rep.state for p, rep in self.replies.items()}

    @property
    def losses(self) -> dict[str, float]:
        return {p: rep.train_loss for p, rep in self.replies.items()}

    # --- local training ----------------------------------------------------------------------------

    def _job(self, pid: str, clients: Mapping[str, ClientState]) -> PartyJob:
        w = self.world
        dp = w.privacy.dp_sgd_params(pid, self.r) if w.cfg.privacy.mechanism == "example" else None
        crash = FAULTS.get((pid, self.r)) == "train" and FAULTS.pop((pid, self.r)) is not None
        return PartyJob(pid, w.party_data[pid], w.cfg.algorithm.party_weight(w.party_weights[pid]), clients[pid],
                        encode_material(w.protocol, w.party_material[pid]), dp, crash)

    def _lose(self, pids: list[str], queue: deque) -> None:
        """These parties' updates died with their actor: train again, or drop them this round."""
        rc, aggregates = self.b.rc, self.world.algorithm.aggregates
        retry = rc.on_actor_failure == "retry" or not aggregates  # without aggregation, no dropout to fall back on
        for p in pids:
            self.replies.pop(p, None)
            self.where.pop(p, None)
            self.attempts[p] += 1
            if retry and self.attempts[p] <= rc.max_retries:
                queue.append(p)
                self.retried += 1
            elif not aggregates:
                raise UserError(f"{p}: its actor died {self.attempts[p]} times in round {self.r + 1}")
            else:
                self.dropped.add(p)

    def run_jobs(self, shared: Any, selected: tuple[str, ...], clients: Mapping[str, ClientState],
                 progress: Any, task: Any) -> None:
        queue = deque(selected)
        while queue:
            self._train_queue(shared, queue, clients, progress, task)
            # An actor may also have died and restarted between two of its jobs without failing one:
            # ask each which updates its current incarnation holds.
            if self.world.algorithm.aggregates:
                held = [self._get_or(actor.held.remote(self.r), []) for actor in self.b.actors]
                gone = [p for p, a in self.where.items() if p not in held[a]]
                if gone:
                    self.failures += 1
                    progress.update(task, advance=-len(gone))
                    self._lose(gone, queue)
        progress.note(self.summary_line())  # to the terminal (above a live bar) and to OUT/run.log

    def _train_queue(self, shared: Any, queue: deque, clients: Mapping[str, ClientState], progress: Any,
                     task: Any) -> None:
        ray, actors, dead = self.b.ray, self.b.actors, self.b.dead
        idle = deque(a for a in range(len(actors)) if a not in dead)
        inflight: dict[Any, tuple[int, str]] = {}
        restarting: dict[Any, int] = {}  # ready() of a restarted actor -> its index
        while queue or inflight:
            while queue and idle:  # one job per actor at a time: it has one model
                a, pid = idle.popleft(), queue.popleft()
                inflight[actors[a].train.remote(shared, self._job(pid, clients))] = (a, pid)
            self._describe(progress, task, inflight)
            if not inflight and not restarting:
                raise UserError(f"every Ray actor died for good (simulation.ray.max_restarts = {self.b.rc.max_restarts})")
            (ref,), _ = ray.wait([*inflight, *restarting], num_returns=1)
            if ref in restarting:  # back with a fresh model, or dead for good
                a = restarting.pop(ref)
                (dead.add if self._get_or(ref, _LOST) is _LOST else idle.append)(a)
                continue
            a, pid = inflight.pop(ref)
            try:
                reply = ray.get(ref)
            except self.b.lost:
                self.failures += 1
                restarting[actors[a].ready.remote()] = a  # no job goes to it until Ray has restarted it
                lost = [pid] + [p for p, h in self.where.items() if h == a]
                progress.update(task, advance=-(len(lost) - 1))
                self._lose(lost, queue)
                continue
            idle.append(a)
            self.replies[pid], self.where[pid] = reply, a
            if reply.dp_spend is not None:  # counted even if it drops later: its data was touched
                self.world.privacy.record_example(pid, *reply.dp_spend)
            progress.advance(task)

    def _describe(self, progress: Any, task: Any, inflight: Mapping[Any, tuple[int, str]]) -> None:
        busy = " ".join(f"a{a}:{pid}" for a, pid in sorted(inflight.values()))
        progress.update(task, description=f"round {self.r + 1}: training on {len(self.b.actors)} actors [{busy}]")

    def summary_line(self) -> str:
        nodes = len({rep.node_id for rep in self.replies.values()})
        return (f"round {self.r + 1}: {len(self.replies)} parties trained on {len(self.b.actors)} actors "
                f"({nodes} node{'s' if nodes != 1 else ''}) in {time.perf_counter() - self.t0:.1f} s; "
                f"actor failures {self.failures}, retried {self.retried}, dropped {len(self.dropped)}")

    def metrics(self) -> dict[str, Any]:
        return {"backend": "ray", "ray_actors": len(self.b.actors),
                "ray_nodes": len({rep.node_id for rep in self.replies.values()}),
                "ray_actor_failures": self.failures, "ray_retried": self.retried, "ray_dropped": len(self.dropped)}

    # --- the protocol ------------------------------------------------------------------------------

    def aggregate(self, ctx: RoundContext) -> tuple[VectorSum, RoundTraffic]:
        """The in-process round of protocols/driver.run_round with each stage's messages delivered to
        the actors holding the addressees' sessions (one call per actor and stage, run in parallel)."""
        actors, w = self.b.actors, self.world
        holders = sorted(set(self.where.values()))
        opened = {a: actors[a].open.remote(ctx) for a in holders}
        for a, ref in opened.items():
            self._call(a, ref)
        server = w.protocol.server(ctx, w.server_material)
        traffic = RoundTraffic({p: 0 for p in ctx.party_ids}, {p: 0 for p in ctx.party_ids})
        try:
            traffic.stages = drive(server, lambda outbound: self._deliver(outbound, traffic))
        finally:
            for a in holders:
                actors[a].close.remote(self.r)
        return server.result(), traffic

    def _get_or(self, ref: Any, default: Any) -> Any:
        try:
            return self.b.ray.get(ref)
        except self.b.lost:
            return default

    def _call(self, a: int, ref: Any) -> Any:
        """ray.get, but an actor that died drops the parties it held (and None is returned)."""
        answer = self._get_or(ref, _LOST)
        if answer is _LOST:
            self.failures += 1
            for p in [p for p, h in self.where.items() if h == a]:
                self.where.pop(p)
                self.dropped.add(p)
            return None
        return answer

    def _deliver(self, outbound: Mapping[str, Message], traffic: RoundTraffic) -> dict[str, Message]:
        by_actor: dict[int, dict[str, Message]] = {}
        for pid, msg in outbound.items():
            if pid in self.where:  # the others dropped (never trained, lost or refused earlier)
                by_actor.setdefault(self.where[pid], {})[pid] = msg
        calls = {}
        for a, msgs in by_actor.items():
            stage = next(iter(msgs.values())).stage
            crash = any(FAULTS.get((p, self.r)) == stage and FAULTS.pop((p, self.r)) for p in msgs)
            calls[a] = self.b.actors[a].stage.remote(self.r, msgs, crash)
        replies: dict[str, Message] = {}
        for a, ref in calls.items():
            answers = self._call(a, ref)
            for pid, answer in (answers or {}).items():
                traffic.received[pid] += len(by_actor[a][pid].payload)
                if answer == REFUSED:
                    self.where.pop(pid)
                elif answer is not None:
                    traffic.sent[pid] += len(answer.payload)
                    replies[pid] = answer
        return replies
