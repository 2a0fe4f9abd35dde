"""What malicious parties do to a federated run, and what bounds and robust rules keep.

    python -m benchmarks.byzantine [--tasks demo,fpb] [--algorithms fedavg,fedadam] [--quick]
                                   [--out bench-out/byzantine]

10 parties, the last 1 or 3 of them malicious, the tiny embedded model, on the embedded demo task and
on Financial PhraseBank (Dirichlet 0.5). Attacks: `sign_flip` (-10 x its update), `scaling` (x100),
`noise` (its update replaced by N(0, sigma^2), sigma = --noise-std) and `label_flip` (an honest
client on data whose labels are rotated: negative -> neutral -> positive -> negative). The model-
poisoning parties skip every party-side clip, and under secagg their codec skips its clip as a
modified client would (only the ring's own limit, max_weight x clip, holds).

Aggregators: plain with mean (undefended), median, trimmed_mean (beta 0.3), multi_krum (f = 3,
keeps 7) and norm_bound (each update clipped to the calibrated C), and secagg with the sum check
(parties clip per coordinate to c and in L2 to C; the server rejects sums past c W and C W).

Each task is warmed up once (FedAvg, plain, attack-free, --warmup rounds) to a model that has
learned something; every run then starts from that adapter and runs --rounds rounds with the
attack; held-out accuracy (the TEST split, never trained on) after them is compared with the same
aggregator's attack-free run. c and C are calibrated on one attack-free round after the warm-up:
1.5x the largest honest |coordinate| and L2 norm. Rows are appended to OUT/rows.jsonl as each run finishes; a rerun
skips the runs already there (resumable). OUT/results.md and OUT/accuracy.png are rebuilt at the end
(or alone with --report).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from securefed import algorithms
from securefed.config import RootConfig, load_config
from securefed.data.chat import render_loaded
from securefed.data.partition import partition
from securefed.models.loading import fit_max_length
from securefed.protocols import encoding
from securefed.protocols import registry as protocols
from securefed.simulation import runner
from securefed.simulation.world import World, build_world

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "financial_phrasebank" / "all-data.csv"
AGGREGATORS = ["mean", "median", "trimmed_mean", "multi_krum", "norm_bound", "secagg"]
ATTACKS = ["sign_flip", "scaling", "noise", "label_flip"]
FLIP = {"negative": "neutral", "neutral": "positive", "positive": "negative"}


def task_overrides(task: str, args: argparse.Namespace) -> list[str]:
    common = ["parties=10", f"seed={args.seed}", "data.test_fraction=0.1", f"evaluation.max_examples={args.eval}",
              "evaluation.batch_size=50", "lora.target_modules=all-linear", "training.batch_size=8",
              f"training.lr={args.lr}", "training.schedule=constant", f"training.max_steps={args.steps}"]
    if task == "demo":
        return common + ["data.source=default"]
    if task == "fpb":
        return common + [f"data.source={args.data}", "data.preset=financial-phrasebank", "training.max_length=96",
                         "data.partition.method=dirichlet", "data.partition.alpha=0.5"]
    raise SystemExit(f"--tasks: unknown task {task!r} (demo, fpb)")


def aggregator_overrides(agg: str, c: float, norm: float, malicious: int) -> list[str]:
    if agg == "secagg":
        return ['aggregation.protocol="secagg"', f"aggregation.secagg.clip={c}", f"aggregation.secagg.control_clip={c}",
                f"aggregation.bound.norm={norm}"]
    rule = [f'aggregation.robust.rule="{agg}"']
    if agg == "trimmed_mean":
        rule.append("aggregation.robust.trim_fraction=0.3")
    if agg == "multi_krum":
        rule.append("aggregation.robust.krum_byzantine=3")
    if agg == "norm_bound":
        rule.append(f"aggregation.robust.norm={norm}")
    return rule


class Quiet:
    """The progress interface run_one_round uses, silent (the benchmark prints one line per run)."""

    def reset(self, *a: Any, **k: Any) -> None: ...
    def update(self, *a: Any, **k: Any) -> None: ...
    def advance(self, *a: Any, **k: Any) -> None: ...


@contextlib.contextmanager
def attacked(attack: str, bad: set[str], noise_std: float, seed: int) -> Iterator[None]:
    """Model poisoning by the parties in `bad`: their trained delta is replaced, they skip the party-side
    clip (aggregation.bound) and their secagg codec skips its clip. label_flip needs none of this."""
    if attack not in ("sign_flip", "scaling", "noise"):
        yield
        return
    real_train, real_input, real_quantize = runner._train_party, runner.party_input, encoding.quantize_into
    evil_results: set[int] = set()
    evil_arrays: list[np.ndarray] = []
    rng = np.random.default_rng(seed)

    def train(world, pid, r, lr, server, state):
        result = real_train(world, pid, r, lr, server, state)
        if pid not in bad:
            return result
        if attack == "sign_flip":
            delta = {k: -10.0 * v for k, v in result.delta.items()}
        elif attack == "scaling":
            delta = {k: 100.0 * v for k, v in result.delta.items()}
        else:
            delta = {k: torch.from_numpy(rng.normal(0, noise_std, tuple(v.shape)).astype(np.float32))
                     for k, v in result.delta.items()}
        out = dataclasses.replace(result, delta=delta)
        evil_results.add(id(out))
        return out

    def party_input(result, layout, weight, clip=None):
        if id(result) not in evil_results:
            return real_input(result, layout, weight, clip)
        data = real_input(result, layout, weight, None)  # no party-side clip
        evil_arrays.extend(a for a in (data.delta, data.control_delta) if a is not None)
        return data

    def quantize_into(out, x, bound, *rest):
        return real_quantize(out, x, math.inf if any(x is a for a in evil_arrays) else bound, *rest)

    runner._train_party, runner.party_input, encoding.quantize_into = train, party_input, quantize_into
    try:
        yield
    finally:
        runner._train_party, runner.party_input, encoding.quantize_into = real_train, real_input, real_quantize


def flipped_data(world: World, cfg: RootConfig, bad: set[str]) -> dict[str, list]:
    """party_data with the bad parties' rows relabelled (same rows, same partition as build_world)."""
    fns = world.task
    data = render_loaded(fns.load(cfg.data, seed=cfg.seed), world.tokenizer, cfg.data.prompt_style)
    parts = partition(len(data.train), data.partition_keys, cfg.parties, cfg.data.partition, seed=cfg.seed)
    out = dict(world.party_data)
    max_length = fit_max_length(world.model, cfg.training.max_length)
    for pid, idx in zip(world.party_ids, parts):
        if pid in bad:
            rows = []
            for i in idx:
                ex = data.train[i]
                if ex.label not in FLIP or ex.label not in ex.response:
                    raise SystemExit(f"label_flip: row {i} has label {ex.label!r} not in its response")
                rows.append(dataclasses.replace(ex, response=ex.response.replace(ex.label, FLIP[ex.label]),
                                                label=FLIP[ex.label]))
            out[pid] = fns.tokenize(world.tokenizer, rows, max_length)
    return out


def run_rounds(world: World, params: dict, rounds: int, first_round: int) -> tuple[dict, list[dict], list]:
    """`rounds` rounds from `params`; (last metrics with evaluation, every round's metrics, inputs seen)."""
    server = world.algorithm.init_server(params)
    clients = {p: world.algorithm.init_client(params) for p in world.party_ids}
    rows = []
    for r in range(first_round, first_round + rounds):
        server, clients, metrics = runner.run_one_round(world, r, server, clients, Quiet(), None)
        rows.append(metrics)
    rows[-1].update(runner._evaluate(world, server, clients))
    return server, rows


def world_for(base: World, cfg: RootConfig) -> World:
    protocol = protocols.create(cfg.aggregation.protocol, cfg.aggregation.section())
    server_material, party_material = protocol.provision(base.party_ids)
    return dataclasses.replace(base, cfg=cfg, algorithm=algorithms.create(cfg.algorithm, cfg.parties),
                               protocol=protocol, server_material=server_material, party_material=party_material)


def warmup(task: str, base: World, warm_cfg: RootConfig, args: argparse.Namespace, out: Path):
    """(adapter after the warm-up, c, C, its metrics); cached in OUT/warmup-TASK.pt. c and C: 1.5x the
    largest honest |coordinate| and L2 norm in one attack-free round at the benchmark's own settings
    from that adapter (a calibration round, not counted anywhere else)."""
    path = out / f"warmup-{task}.pt"
    if path.exists():
        saved = torch.load(path)
        return saved["params"], saved["c"], saved["norm"], saved["metrics"]
    t0 = time.perf_counter()
    server, rows = run_rounds(dataclasses.replace(base, cfg=warm_cfg), base.initial_adapter, args.warmup, 0)
    params = dict(server.params)
    seen: list[np.ndarray] = []
    real_input = runner.party_input

    def spy(result, layout, weight, clip=None):
        data = real_input(result, layout, weight, clip)
        seen.append(data.delta)
        return data

    runner.party_input = spy
    try:
        run_rounds(base, params, 1, args.warmup)
    finally:
        runner.party_input = real_input
    c = 1.5 * max(float(np.max(np.abs(d))) for d in seen)
    norm = 1.5 * max(float(np.linalg.norm(d)) for d in seen)
    metrics = {k: rows[-1][k] for k in ("accuracy", "macro_f1", "eval_loss")} | {"seconds": time.perf_counter() - t0}
    torch.save({"params": params, "c": c, "norm": norm, "metrics": metrics}, path)
    return params, c, norm, metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default="demo,fpb")
    ap.add_argument("--algorithms", default="fedavg,fedadam")
    ap.add_argument("--aggregators", default=",".join(AGGREGATORS))
    ap.add_argument("--attacks", default=",".join(ATTACKS))
    ap.add_argument("--malicious", default="1,3")
    ap.add_argument("--warmup", type=int, default=8, help="attack-free FedAvg rounds before every run")
    ap.add_argument("--rounds", type=int, default=3, help="R: rounds under attack")
    ap.add_argument("--steps", type=int, default=5, help="local steps per party and round under attack")
    ap.add_argument("--warmup-steps", type=int, default=10, help="local steps per party in a warm-up round")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--eval", type=int, default=150, help="held-out TEST rows scored")
    ap.add_argument("--noise-std", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--quick", action="store_true", help="toy sizes (CI smoke test)")
    ap.add_argument("--report", action="store_true", help="only rebuild results.md / accuracy.png from rows.jsonl")
    ap.add_argument("--out", default="bench-out/byzantine")
    args = ap.parse_args()
    if args.quick:
        args.warmup, args.rounds, args.steps, args.warmup_steps, args.eval = 1, 1, 1, 1, 20
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows_path = out / "rows.jsonl"
    if not args.report:
        run_grid(args, out, rows_path)
    from benchmarks.byzantine_report import write_report

    write_report(rows_path, out, " ".join(["python -m benchmarks.byzantine"] + _argv()))


def _argv() -> list[str]:
    import sys

    return [a for a in sys.argv[1:] if a != "--report"]


def run_grid(args: argparse.Namespace, out: Path, rows_path: Path) -> None:
    done = set()
    if rows_path.exists():
        done = {tuple(json.loads(x)["key"]) for x in rows_path.read_text().splitlines() if x.strip()}
    log = (out / "run.log").open("a", encoding="utf-8")

    def say(line: str) -> None:
        print(line, flush=True)
        log.write(line + "\n")
        log.flush()

    worlds = {}
    for task in args.tasks.split(","):
        t0 = time.perf_counter()
        base = build_world(load_config(None, task_overrides(task, args)))
        warm_cfg = load_config(None, task_overrides(task, args) + [f"training.max_steps={args.warmup_steps}"])
        params, c, norm, wm = warmup(task, base, warm_cfg, args, out)
        say(f"[{task}] world + warm-up {time.perf_counter() - t0:.0f}s; {args.warmup} rounds: accuracy "
            f"{wm['accuracy']:.3f}; calibrated c={c:.3g}, C={norm:.3g}")
        worlds[task] = (base, params, c, norm, wm)
    ks = list(map(int, args.malicious.split(",")))
    # scenario-major and tasks interleaved, so that a run cut short has every task and aggregator for
    # the first attacks
    scenarios = [("none", 0)] + [(a, k) for k in ks for a in args.attacks.split(",")]
    for attack, k in scenarios:
        for task, (base, params, c, norm, wm) in worlds.items():
            bad = set(base.party_ids[-k:]) if k else set()
            for alg in args.algorithms.split(","):
                for agg in args.aggregators.split(","):
                    key = (task, alg, agg, attack, k)
                    if key in done:
                        continue
                    cfg = load_config(None, task_overrides(task, args) + [f"algorithm.name={alg}"]
                                      + aggregator_overrides(agg, c, norm, k))
                    world = world_for(base, cfg)
                    if attack == "label_flip":
                        world = dataclasses.replace(world, party_data=flipped_data(world, cfg, bad))
                    t1 = time.perf_counter()
                    with attacked(attack, bad, args.noise_std, args.seed):
                        _, rows = run_rounds(world, params, args.rounds, args.warmup)
                    final = rows[-1]
                    row = {"key": list(key), "task": task, "algorithm": alg, "aggregator": agg, "attack": attack,
                           "malicious": k, "accuracy": final["accuracy"], "macro_f1": final["macro_f1"],
                           "eval_loss": final["eval_loss"], "rejected": sum(1 for m in rows if "rejected" in m),
                           "rounds": len(rows), "warmup_accuracy": wm["accuracy"], "c": c, "C": norm,
                           "seconds": time.perf_counter() - t1}
                    with rows_path.open("a", encoding="utf-8") as f:
                        f.write(json.dumps(row) + "\n")
                    say(f"[{task}] {alg:8s} {agg:12s} {attack:10s} x{k}: accuracy {row['accuracy']:.3f} "
                        f"rejected {row['rejected']}/{len(rows)} ({row['seconds']:.0f}s)")

if __name__ == "__main__":
    main()
