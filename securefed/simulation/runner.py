"""The federated simulation: every party in one process, the same protocol code as a deployment.

Per round: select parties -> each trains locally from the global adapter -> protocol sums their
updates -> the algorithm's server step sees only the Aggregate -> evaluate -> metrics + checkpoint.
All per-round randomness of training (data order, LoRA dropout, selection) derives from
(seed, round, party), so a resumed run ends with the same adapter as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from securefed.algorithms.base import ClientContext, ClientState, ServerState
from securefed.config import RootConfig, protocol_floor
from securefed.errors import UserError
from securefed.membership import round_floor
from securefed.models.adapter import save_adapter
from securefed.progress import RunProgress, collect_warnings
from securefed.reporting.mlflow_log import mlflow_writer
from securefed.reporting.tensorboard import round_writer
from securefed.protocols.base import PartyInput, ProtocolAbort, RoundContext, SumOutOfRange, check_sum
from securefed.robust.bounds import input_bound, party_clip
from securefed.robust.stacked import run_robust_round
from securefed.protocols.driver import run_round
from securefed.atomic import atomic_write_text
from securefed.simulation.backends import open_backend
from securefed.privacy.sensitivity import weight_bound
from securefed.simulation.checkpoint import Checkpoint, check_same_run, load_checkpoint, save_checkpoint
from securefed.simulation.report import print_partition
from securefed.simulation.evaluate import mean_metrics
from securefed.simulation.steps import derive_seed, party_input, select_parties, to_aggregate, train_party, train_party_dp
from securefed.simulation.world import World, build_world
from securefed.training.schedule import round_lr


def protocol_stats(stats: dict[str, Any]) -> dict[str, float]:
    """Numeric protocol statistics (clipped fraction, error bounds, ...) as flat metric names."""
    out: dict[str, float] = {}
    for k, v in stats.items():
        if isinstance(v, dict):
            out.update({f"protocol_{k}_{kk}": vv for kk, vv in v.items() if isinstance(vv, (int, float))})
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"protocol_{k}"] = v
    return out


def _save_adapter(world: World, params: dict[str, torch.Tensor], out: Path) -> None:
    save_adapter(world.model, params, out, world.cfg.to_json())


def _evaluate(world: World, server: ServerState, clients: dict[str, ClientState]) -> dict[str, float]:
    ev = world.cfg.evaluation
    args = (world.model, world.tokenizer)
    score = world.task.evaluate
    if world.algorithm.aggregates:
        return score(*args, server.params, world.evalset, world.device, ev.batch_size, ev.max_new_tokens)
    rows = [
        score(*args, clients[p].own_params, world.evalset, world.device, ev.batch_size, ev.max_new_tokens)
        for p in world.party_ids
    ]
    return mean_metrics(rows)


def _train_party(world: World, pid: str, r: int, lr: float, server: ServerState, state: ClientState):
    cfg = world.cfg
    start = server.params if world.algorithm.aggregates else state.own_params
    ctx = ClientContext(global_params=start, server_control=server.control)
    if cfg.privacy.mechanism == "example":
        out = train_party_dp(world.task, world.model, world.tokenizer.pad_token_id, world.party_data[pid], cfg, r,
                             pid, lr, world.algorithm, ctx, state, world.device, world.privacy.dp_sgd_params(pid, r))
        world.privacy.record_example(pid, out.noise_multiplier, out.sample_rate, out.steps)
        return out.result
    return train_party(world.task, world.model, world.tokenizer.pad_token_id, world.party_data[pid], cfg, r, pid,
                       lr, world.algorithm, ctx, state, world.device)


def run_one_round(world: World, r: int, server: ServerState, clients: dict[str, ClientState], progress, task,
                  backend=None):
    cfg = world.cfg
    selected = select_parties(world.party_ids, r, cfg.seed, cfg.sampling.count, cfg.sampling.fraction,
                              cfg.sampling.rule)
    lr = round_lr(r, cfg.rounds, cfg.training.lr, cfg.training.min_lr, cfg.training.schedule)
    selected = world.privacy.admit_round(r, selected)  # parties whose DP budget is spent sit out
    if not selected:
        server = world.privacy.release_empty(server, world.algorithm, world.layout)  # amplified DP: noise only
        return server, clients, {"round": r + 1, "algorithm": world.algorithm.name, "lr": lr, "selected": 0,
                                 **world.privacy.close_round()}
    inputs: dict[str, PartyInput] = {}
    pending: dict[str, ClientState] = {}
    losses: dict[str, float] = {}
    secret = world.privacy.amplified  # a secret Poisson draw: no line may name the drawn or count them
    progress.reset(task, total=None if secret else len(selected), description=f"round {r + 1}: local training")
    # Ray backend: the parties train on actors, which keep their updates for the protocol (aggregate)
    remote = backend.train(world, r, lr, selected, server, clients, progress, task) if backend else None
    for pid in selected if remote is None else ():
        if not secret:
            progress.update(task, description=f"round {r + 1}: {pid} training")
        result = _train_party(world, pid, r, lr, server, clients[pid])
        plain_input = party_input(result, world.layout, cfg.algorithm.party_weight(world.party_weights[pid]),
                                  party_clip(cfg))
        # user-level DP: clip the whole update (+ distributed noise share); otherwise unchanged
        inputs[pid] = world.privacy.party_input(plain_input.delta, plain_input.control_delta, plain_input.weight)
        pending[pid] = result.client_state
        losses[pid] = result.train_loss
        if not secret:
            progress.advance(task)
    if remote is not None:
        pending, losses = remote.pending, remote.losses
    metrics: dict[str, Any] = {"round": r + 1, "algorithm": world.algorithm.name, "lr": lr,
                               "selected": len(selected)}
    contributors = selected
    if world.algorithm.aggregates:
        if not secret:  # (a draw of nobody has no aggregation phase)
            progress.update(task, description=f"round {r + 1}: {cfg.aggregation.protocol} aggregation")
        ctx = RoundContext(cfg.federation_id, r, selected, world.layout.size, world.algorithm.uses_control,
                           weight_bound(world.party_weights.values()), min_contributors=round_floor(cfg))
        too_few = protocol_floor(cfg, len(selected))
        too_few = too_few and f"{too_few}, {len(selected)} admitted"
        try:
            if too_few:
                raise ProtocolAbort(too_few)
            # a sum clipped parties cannot produce (a malicious party) is rejected before anything uses it
            if cfg.aggregation.robust.rule != "mean":  # plain only (config): a robust rule over the rows
                vsum, traffic = run_robust_round(world.protocol, ctx, inputs, world.server_material,
                                                 world.party_material, cfg.aggregation.robust,
                                                 derive_seed(cfg.seed, "robust", r), input_bound(cfg))
            else:
                vsum, traffic = (remote.aggregate(ctx) if remote else
                                 run_round(world.protocol, ctx, inputs, world.server_material, world.party_material))
                vsum = check_sum(vsum, ctx, input_bound(cfg))
        except ProtocolAbort as e:
            # Nothing was released: the global model and every client state stay as they were (a
            # deployment would retry; a simulation moves on so a long run is not lost to one round).
            what = "rejected" if isinstance(e, SumOutOfRange) else "aborted"
            say = getattr(progress, "note", None)  # RunProgress; a plain rich Progress has no log
            if say is not None:
                say(f"round {r + 1}: {what} by the {cfg.aggregation.protocol} protocol ({e}); model unchanged")
            metrics.update(protocol=cfg.aggregation.protocol, contributors=0,
                           train_loss=sum(losses.values()) / len(losses), **world.privacy.close_round())
            metrics[what] = str(e) or "protocol abort"
            return server, clients, metrics
        excluded = tuple(vsum.stats.get("excluded", ()))
        if excluded:  # e.g. threshold he: a decryptor whose answers did not decode (the round finished without it)
            say = getattr(progress, "note", None)
            if say is not None:
                say(f"round {r + 1}: {cfg.aggregation.protocol} left out {', '.join(excluded)}: its answers did not decode")
            metrics["excluded"] = list(excluded)
        vsum = world.privacy.finish_round(vsum)  # central noise / distributed decoding, before the server step
        server = world.algorithm.server_update(server, to_aggregate(vsum, world.layout))
        contributors = vsum.contributors
        sent = [traffic.sent[p] for p in selected]
        metrics.update(protocol=cfg.aggregation.protocol, contributors=len(contributors),
                       bytes_sent_per_party=sum(sent) / len(sent), bytes_received_per_party=
                       sum(traffic.received[p] for p in selected) / len(selected),
                       fp32_bytes_per_party=4 * world.layout.size * (2 if world.algorithm.uses_control else 1),
                       **protocol_stats(vsum.stats))
    clients = {**clients, **{p: pending[p] for p in contributors}}  # dropped parties keep their old state
    w = {p: world.party_weights[p] for p in contributors}
    metrics["train_loss"] = sum(losses[p] * w[p] for p in contributors) / sum(w.values())
    metrics.update(world.privacy.close_round())
    metrics.update(remote.metrics() if remote else {})
    return server, clients, metrics


def _truncate_metrics(path: Path, completed: int) -> list[dict]:
    """Keep the metrics of rounds <= completed (a crash may have left a line past the checkpoint)."""
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [row for row in rows if row["round"] <= completed]
    atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))
    return rows


def simulate(
    cfg: RootConfig, out_dir: str | Path, resume: bool = False, console: Console | None = None,
    stop_after: int | None = None,
) -> dict:
    """Run (or resume) a simulation; writes OUT/{config.json, metrics.jsonl, summary.json, adapter/}.

    `stop_after=k` stops once k rounds are complete, as an interruption would (checkpoint kept)."""
    out = Path(out_dir)
    console = console or Console(stderr=True)
    if not resume and (out / "checkpoints" / "LATEST").exists():
        raise UserError(f"{out} already holds a run; use --resume to continue it or choose another --out")
    ckpt = load_checkpoint(out) if resume else None
    if ckpt is not None:
        check_same_run(ckpt.config, cfg, out)  # before anything in OUT is rewritten
    with collect_warnings(console) as notes:  # e.g. skipped malformed rows, said on the console now
        world = build_world(cfg)
    if world.inferred_preset:
        notes.append(f"data: {cfg.data.source} read as preset {world.inferred_preset!r} (inferred from its "
                     "columns; set data.preset to choose another)")
        console.print(notes[-1], highlight=False, soft_wrap=True)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.json", cfg.to_json())
    atomic_write_text(out / "partition.json", json.dumps(dataclasses.asdict(world.partition_report), indent=2))
    print_partition(world.partition_report, world.party_ids, console)
    metrics_path = out / "metrics.jsonl"
    if ckpt is not None:
        server, clients, start = ckpt.server, dict(ckpt.clients), ckpt.completed_rounds
        history = _truncate_metrics(metrics_path, start)
        world.privacy.restore(history)
    else:
        server = world.algorithm.init_server(world.initial_adapter)
        clients = {p: world.algorithm.init_client(world.initial_adapter) for p in world.party_ids}
        start, history = 0, []
        metrics_path.unlink(missing_ok=True)
    heldout = None  # the last evaluation of this process: which rows, how many, the figures (model card)
    t0 = time.perf_counter()
    timed = not world.privacy.amplified  # secret draw: a round's duration would tell how many trained
    with RunProgress(console, out / "run.log", cfg.rounds, timed=timed) as progress, \
            round_writer(cfg.output.tensorboard, out / "tensorboard", timed) as board, \
            mlflow_writer(cfg, out, resume) as track, \
            open_backend(world) as backend:
        for note in notes:
            progress.write_log(note)  # the console saw them already; the log file gets them too
        if not timed:
            progress.note("secret Poisson selection (privacy.sampling_amplification): no line, metric or file of "
                          "this run names the drawn parties, counts them or times a round")
        rounds_task = progress.add_task("rounds", total=cfg.rounds, completed=start)
        party_task = progress.add_task("parties", total=1)
        for r in range(start, min(cfg.rounds, stop_after or cfg.rounds)):
            t_round = time.perf_counter()
            server, clients, metrics = run_one_round(world, r, server, clients, progress, party_task, backend)
            metrics = world.privacy.public_metrics(metrics)  # secret draw: only what does not depend on it
            if (r + 1) % cfg.evaluation.every == 0 or r + 1 == cfg.rounds:
                progress.update(party_task, description=f"round {r + 1}: evaluating")
                scored = _evaluate(world, server, clients)
                metrics.update(scored)
                heldout = {"round": r + 1, "split": world.evalset.split, "rows": len(world.evalset.examples),
                           "metrics": scored}
            if timed:
                metrics["seconds"] = time.perf_counter() - t_round
            progress.round_done(metrics)
            board(metrics)
            track(metrics)
            history.append(metrics)
            with metrics_path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(metrics) + "\n")
            save_checkpoint(out, Checkpoint(r + 1, server, clients, json.loads(cfg.to_json())))
            if cfg.output.save_every_round and world.algorithm.aggregates:
                _save_adapter(world, dict(server.params), out / "rounds" / f"round-{r + 1:04d}" / "adapter")
            progress.advance(rounds_task)
    if world.algorithm.aggregates:
        _save_adapter(world, dict(server.params), out / "adapter")
    else:
        for p in world.party_ids:
            _save_adapter(world, dict(clients[p].own_params), out / "local-adapters" / p)
    summary = {
        "algorithm": cfg.algorithm.name, "protocol": cfg.aggregation.protocol, "rounds": cfg.rounds,
        "parties": cfg.parties, "model": cfg.model.name_or_path, "data": cfg.data.source,
        "party_sizes": world.party_weights, "skipped_rows": world.skipped_rows,
        "first": history[0] if history else None, "final": history[-1] if history else None,
    }
    if heldout is not None:
        summary["heldout"] = heldout
    if timed:
        summary["seconds_this_run"] = time.perf_counter() - t0
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    return summary
