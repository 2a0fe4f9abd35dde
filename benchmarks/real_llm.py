"""Federated LoRA on a real pretrained LLM: Financial PhraseBank utility and federated DPO on HH-RLHF.

    python -m benchmarks.real_llm [--preset cpu|gpu] [--model PATH] [--out bench-out/real_llm] [--skip-sft] [--skip-dpo]

SFT (OpenFedLLM's FPB metrics: accuracy and macro-F1 of the generated label): a held-out TEST split
(data.test_fraction, fixed by the seed; no party or baseline ever trains on it; every figure is
scored on it), the rest split over `--parties` parties by Dirichlet(`--alpha`) over labels. Rows:
zero-shot base; centralized LoRA (all train rows in one party, as many local steps per round as the
whole federation takes); Local (each party alone, the mean of their scores); every FL algorithm under
`plain`; FedAvg under `secagg` and `he`; FedAvg with example-level DP-SGD at epsilon 8 per party.
DPO: HH-RLHF harmless-base pairs (held-out TEST pairs), federated DPO under plain and secagg;
before/after: the policy's likelihood preference accuracy (log p(chosen) > log p(rejected)), and the
DPO implicit-reward accuracy and margin against the base (0 / 0 before training by construction).

Full GPU recipe (one H100/H200, SmolLM2-135M-Instruct or any 7B checkpoint with --model):
    python -m benchmarks.real_llm --preset gpu --device cuda
  = 10 parties, Dirichlet 0.5, test 20% (969 rows, all scored), 10 rounds x 10 local steps x batch 16,
    lr 2e-4 (1e-3 for 135M), LoRA r 16 all-linear, packing on, max_length 256; DPO 10 parties,
    5 rounds x 10 steps x 8 pairs, max_length 512, 231 held-out pairs. For 7B add
    `--set model.quantization=4bit --set training.gradient_checkpointing=true`.
CPU recipe (2 shared cores, SmolLM2-135M; a LoRA step at 4 x ~90 tokens is ~10 s there, one
generation pass over 40 prompts ~1 min, so this is the smallest run that still trains every party):
    python -m benchmarks.real_llm --preset cpu [--only "centralized,local,fedavg plain,..."]
  = the same TEST rows (first 40 scored), 600 train rows over 10 parties, 2 rounds x 1 step x batch 4,
    q/v LoRA r 8, lr 2e-3, max_length 96; DPO 4 parties, 2 rounds x 1 step x 2 pairs, 32 held-out pairs.

Issue 25's headline recipe (`--preset headline`: 3 of 10 parties sampled a round, 10 local steps x batch
8, 30 rounds = 300 sequential steps, the 300-step centralized run's budget; held-out every 5 rounds),
one run at a time, resumable across kills and sessions (the run directories live in the repository):
    python -m benchmarks.real_llm --preset headline --skip-dpo --resume --out bench-state/real_llm_headline \
        --headline docs/results/real_llm_headline.json --only "fedavg plain,local"
  then --only "fedavg secagg DP eps 8,fedavg secagg DP eps 4,fedavg secagg DP eps 1", the other algorithms
  ("fedprox plain,scaffold plain,..."), and "fedavg secagg,fedavg he" with --rounds 5 (a shorter run
  that shows they equal plain). Each finished run is read back, not rerun; a stopped one continues
  from its last checkpoint. Wall time on the 2 shared cores, OMP_NUM_THREADS=1: ~125 s a round alone
  (3 x 10 steps), ~85 s more on an evaluation round (200 TEST rows); 3-12 min a round beside other work.

Any preset value can be overridden by its flag (--rounds, --steps, --batch, --lr, --test-max,
--max-length, --max-examples, --dpo-*). The runs in docs/results.md (2 cores, one process per line,
`OMP_NUM_THREADS=1`; third session, each line 35-60 min beside the others):
    L="--skip-dpo --rounds 10 --steps 3 --batch 8 --lr 2e-3 --test-max 200 --max-length 128 --max-examples 100000"
    python -m benchmarks.real_llm $L --set evaluation.every=2 --only "centralized,fedavg plain" --out A
    python -m benchmarks.real_llm $L --skip-zero-shot --only local --out B
    python -m benchmarks.real_llm $L --skip-zero-shot --set evaluation.every=2 --set model.quantization=4bit \
        --tag 4-bit --only centralized --out C
    python -m benchmarks.real_llm --skip-sft --dpo-rounds 4 --dpo-steps 8 --dpo-batch 2 --dpo-lr 1e-3 \
        --dpo-test 96 --out D
    python -m benchmarks.real_llm --merge A B C D --out bench-out/real_llm
  and (second session, the short run with every algorithm) `--rounds 2 --steps 2` with the same other flags.

Writes OUT/results.json, OUT/results.md, OUT/utility.png, OUT/curves.png (held-out scores by round, for
runs evaluated more than once: `--set evaluation.every=K`) and OUT/progress.log (one line per run).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rich.console import Console

from benchmarks.llm_efficiency import SHARED_DATA as _DATA
from benchmarks.llm_efficiency import default_model
from securefed.atomic import atomic_write_text
from securefed.config import load_config
from securefed.simulation.runner import simulate
from securefed.simulation.world import build_world

ALGORITHMS = ["fedavg", "fedprox", "scaffold", "fedavgm", "fedadagrad", "fedyogi", "fedadam"]
PRESETS = {
    "cpu": dict(test_max=40, max_examples=600, rounds=2, steps=1, batch=4, lr=2e-3, r=8, targets="q_proj,v_proj",
                max_length=96, dpo_parties=4, dpo_rounds=2, dpo_steps=1, dpo_batch=2, dpo_max_length=160,
                dpo_test=32, dpo_max_examples=300, dpo_lr=5e-4),
    "gpu": dict(test_max=1000, max_examples=None, rounds=10, steps=10, batch=16, lr=1e-3, r=16, targets="all-linear",
                max_length=256, dpo_parties=10, dpo_rounds=5, dpo_steps=10, dpo_batch=8, dpo_max_length=512,
                dpo_test=1000, dpo_max_examples=None, dpo_lr=5e-4),
    # Issue 25's recipe (OpenFedLLM's shape at 135M): 3 of 10 parties a round x 10 local steps x batch 8
    # x 30 rounds = 300 sequential steps, the budget of the 300-step centralized run; held-out every 5.
    "headline": dict(test_max=200, max_examples=100000, rounds=30, steps=10, batch=8, lr=2e-3, r=8,
                     targets="q_proj,v_proj", max_length=128, sample=3, eval_every=5, dpo_parties=4, dpo_rounds=2,
                     dpo_steps=1, dpo_batch=2, dpo_max_length=160, dpo_test=32, dpo_max_examples=300, dpo_lr=5e-4),
}

_PRESET_FLAGS = {"rounds": int, "steps": int, "batch": int, "lr": float, "test_max": int, "max_length": int,
                 "max_examples": int, "dpo_rounds": int, "dpo_steps": int, "dpo_batch": int, "dpo_lr": float,
                 "dpo_test": int}


def sft_base(args, p: dict) -> list[str]:
    cap = [] if p["max_examples"] is None else [f"data.max_examples={p['max_examples']}"]
    cap += [f"sampling.count={p['sample']}"] if p.get("sample") else []
    return [
        f"model.name_or_path={args.model}", f"model.device={args.device}", f"seed={args.seed}",
        f"data.source={args.data}", "data.preset=financial-phrasebank", "data.test_fraction=0.2",
        "data.eval_fraction=0.0", *cap, "data.partition.method=dirichlet", f"data.partition.alpha={args.alpha}",
        f"parties={args.parties}", f"rounds={p['rounds']}", f"training.max_steps={p['steps']}",
        f"training.batch_size={p['batch']}", f"training.lr={p['lr']}", f"training.max_length={p['max_length']}",
        "training.packing=true", "lora.dropout=0.0", f"lora.r={p['r']}", f"lora.alpha={2 * p['r']}",
        _targets(p["targets"]), f"evaluation.max_examples={p['test_max']}",
        f"evaluation.every={p.get('eval_every', p['rounds'])}", "evaluation.batch_size=16", "evaluation.max_new_tokens=4", *args.set,
    ]


def _targets(t: str) -> str:
    return "lora.target_modules=all-linear" if t == "all-linear" else f"lora.target_modules={json.dumps(t.split(','))}"


def sft_runs(args, p: dict) -> list[tuple[str, list[str]]]:
    # Centralized takes the federation's sequential steps a round: every party's under full
    # participation (steps x parties), one party's when a few are sampled (the 300-step run).
    per_round = p["steps"] if p.get("sample") else p["steps"] * args.parties
    central = ["parties=1", "sampling.count=1" if p.get("sample") else "parties=1", "data.partition.method=iid",
               f"training.max_steps={per_round}"]
    runs = [("centralized", central), ("local", ["algorithm.name=local"])]
    runs += [(f"{a} plain", [f"algorithm.name={a}"]) for a in ALGORITHMS]
    runs += [("fedavg secagg", ["aggregation.protocol=secagg"]), ("fedavg he", ["aggregation.protocol=he"]),
             ("fedavg DP eps 8", ["privacy.mechanism=example", "privacy.target_epsilon=8"])]
    # The privacy/utility frontier: example-level DP-SGD on every party, updates over secagg.
    runs += [(f"fedavg secagg DP eps {e}", ["aggregation.protocol=secagg", "privacy.mechanism=example",
                                            f"privacy.target_epsilon={e}"]) for e in (1, 4, 8)]
    if not args.only:
        return runs
    by_name = dict(runs)
    unknown = [n for n in args.only.split(",") if n not in by_name]
    if unknown:
        raise SystemExit(f"--only: unknown run(s) {unknown}; known: {', '.join(by_name)}")
    return [(n, by_name[n]) for n in args.only.split(",")]  # in the order given


def zero_shot(world) -> dict:
    """The base model (LoRA B = 0, so the adapter is the identity) scored on the world's TEST rows."""
    ev = world.cfg.evaluation
    return world.task.evaluate(world.model, world.tokenizer, world.initial_adapter, world.evalset, world.device,
                               ev.batch_size, ev.max_new_tokens)


def run_sft(args, p: dict, out: Path, log) -> list[dict]:
    """Every SFT run of the preset, each in OUT/runs/NAME. A run that finished before (its summary.json
    covers every round) is read back, not rerun; one stopped part-way (killed, or a session that
    ended) continues from its last checkpoint, so `--resume` after a kill or on a fresh machine with
    the run directories copied back loses at most one round."""
    base = sft_base(args, p)
    rows = []
    if not args.skip_zero_shot:
        cached = out / "zero-shot.json"
        if args.resume and cached.is_file():
            rows.append(json.loads(cached.read_text()))
        else:
            t0 = time.perf_counter()
            world = build_world(load_config(None, base))
            rows.append({"run": "zero-shot", **zero_shot(world), "rows_scored": len(world.evalset.examples),
                         "seconds": time.perf_counter() - t0})
            atomic_write_text(cached, json.dumps(rows[-1]))
        log(rows[-1])
    for name, extra in sft_runs(args, p):
        name = f"{name} ({args.tag})" if args.tag else name
        run_dir = out / "runs" / name.replace(" ", "-").replace("(", "").replace(")", "")
        cfg = load_config(None, base + extra)
        done = _finished(run_dir, cfg.rounds)
        if done is None:
            started = (run_dir / "checkpoints" / "LATEST").exists()
            if started and not args.resume:
                raise SystemExit(f"{run_dir} holds a stopped run: add --resume to continue it")
            simulate(cfg, run_dir, resume=started, console=args.console, stop_after=args.stop_after)
            done = _finished(run_dir, cfg.rounds)
        if done is None:  # --stop-after: the checkpoint is kept for --resume
            args.console.print(f"{name}: stopped before round {cfg.rounds}; continue with --resume")
            continue
        rows.append({"run": name, **done})
        log(rows[-1])
    return rows


def _finished(run_dir: Path, rounds: int) -> dict | None:
    """A finished run's row (final held-out figures, curve, wall seconds summed over its rounds, so a
    resumed run counts each round once), or None when the run has not completed every round."""
    metrics = run_dir / "metrics.jsonl"
    if not (run_dir / "summary.json").is_file() or not metrics.is_file():
        return None
    history = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    if len(history) < rounds:
        return None
    final, cfg = history[-1], json.loads((run_dir / "config.json").read_text())
    row = {k: final[k] for k in ("accuracy", "macro_f1", "eval_loss", "unparseable")}
    row.update(train_loss=final["train_loss"], seconds=sum(h.get("seconds", 0.0) for h in history),
               curve=eval_curve(metrics), rounds=rounds, algorithm=cfg["algorithm"]["name"],
               protocol=cfg["aggregation"]["protocol"], local_steps=cfg["training"]["max_steps"],
               rows_scored=int(final["eval_rows"]))
    if cfg["privacy"]["mechanism"] != "none":
        row["epsilon"] = final.get("dp_epsilon_max")
    return row


def headline_entries(rows: list[dict], p: dict, parties: int) -> list[dict]:
    """docs/results/real_llm_headline.json's schema: one entry per run, held-out figures only."""
    out = []
    for r in rows:
        kind = ("zero-shot" if r["run"] == "zero-shot" else "centralized" if r["run"].startswith("centralized")
                else "local" if r.get("algorithm") == "local" else "federated")
        steps = 0 if kind == "zero-shot" else r["rounds"] * r["local_steps"]
        if kind == "local" and p.get("sample"):  # a party trains only in the rounds it is sampled
            steps = steps * p["sample"] / parties
        out.append({"run": r["run"], "kind": kind, "algorithm": r.get("algorithm"), "protocol": r.get("protocol"),
                    "epsilon": r.get("epsilon"), "rounds": r.get("rounds", 0), "sequential_steps": steps,
                    "accuracy": r["accuracy"], "macro_f1": r["macro_f1"], "heldout_loss": r["eval_loss"],
                    "rows_scored": r["rows_scored"], "wall_s": round(r["seconds"], 1)})
    return out


def update_headline(path: Path, entries: list[dict], command: str) -> None:
    """Replace this invocation's runs in the summary (matched by run name), keep the others."""
    doc = json.loads(path.read_text()) if path.is_file() else {"runs": []}
    names = {e["run"] for e in entries}
    doc["runs"] = [e for e in doc["runs"] if e["run"] not in names] + [{**e, "command": command} for e in entries]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")


def eval_curve(metrics: Path) -> list[dict]:
    """(round, accuracy, macro-F1, eval loss) at every evaluated round of a run's metrics.jsonl."""
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return [{k: r[k] for k in ("round", "accuracy", "macro_f1", "eval_loss")} for r in rows if "accuracy" in r]


def dpo_overrides(args, p: dict) -> list[str]:
    cap = [] if p["dpo_max_examples"] is None else [f"data.max_examples={p['dpo_max_examples']}"]
    return [
        "task=dpo", f"model.name_or_path={args.model}", f"model.device={args.device}", f"seed={args.seed}",
        f"data.source={args.hh}", "data.preset=hh-rlhf", "data.skip_malformed=true", "data.test_fraction=0.1",
        "data.eval_fraction=0.0", *cap, f"parties={p['dpo_parties']}", f"rounds={p['dpo_rounds']}",
        f"training.max_steps={p['dpo_steps']}", f"training.batch_size={p['dpo_batch']}", f"training.lr={p['dpo_lr']}",
        f"training.max_length={p['dpo_max_length']}", "lora.dropout=0.0", f"lora.r={p['r']}",
        f"lora.alpha={2 * p['r']}", _targets(p["targets"]), f"evaluation.max_examples={p['dpo_test']}",
        f"evaluation.every={p['dpo_rounds']}", "evaluation.batch_size=4", "dpo.beta=0.1", *args.set,
    ]


def likelihood_accuracy(world, params) -> float:
    """Share of held-out pairs where the policy gives the chosen reply a higher log-probability."""
    import torch

    from securefed.models.adapter import set_adapter_state
    from securefed.training.dpo import policy_logprobs

    set_adapter_state(world.model, params)
    wins = []
    with torch.no_grad():
        for b in world.evalset.batches:
            lp = policy_logprobs(world.model, {k: v.to(world.device) for k, v in b.items()})
            n = lp.shape[0] // 2
            wins += (lp[:n] > lp[n:]).tolist()
    return sum(wins) / len(wins)


def run_dpo(args, p: dict, out: Path, log) -> list[dict]:
    from safetensors.torch import load_file

    base = dpo_overrides(args, p)
    world = build_world(load_config(None, base))
    before = zero_shot(world)
    rows = [{"run": "DPO base (before)", "likelihood_accuracy": likelihood_accuracy(world, world.initial_adapter),
             "preference_accuracy": before["preference_accuracy"], "reward_margin": before["reward_margin"],
             "pairs": sum(len(b["input_ids"]) // 2 for b in world.evalset.batches)}]
    log(rows[-1])
    for protocol in args.dpo_protocols.split(","):
        t0 = time.perf_counter()
        run_dir = out / "runs" / f"dpo-fedavg-{protocol}"
        summary = simulate(load_config(None, base + [f"aggregation.protocol={protocol}"]), run_dir,
                           console=args.console)
        final = summary["final"]
        adapter = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
        rows.append({"run": f"DPO fedavg {protocol} (after)", "likelihood_accuracy": likelihood_accuracy(world, adapter),
                     "preference_accuracy": final["preference_accuracy"], "reward_margin": final["reward_margin"],
                     "train_loss": final["train_loss"], "seconds": time.perf_counter() - t0})
        log(rows[-1])
    return rows


def table(rows: list[dict], cols: list[str]) -> str:
    lines = ["| run | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for r in rows:
        cells = [f"{r[c]:.3f}" if isinstance(r.get(c), float) else str(r.get(c, "-")) for c in cols]
        lines.append(f"| {r['run']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    ys = range(len(rows))
    ax.barh([y - 0.2 for y in ys], [r["accuracy"] for r in rows], 0.4, label="accuracy")
    ax.barh([y + 0.2 for y in ys], [r["macro_f1"] for r in rows], 0.4, label="macro-F1")
    ax.set_yticks(list(ys), [r["run"] for r in rows])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.legend(loc="lower right")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_curves(rows: list[dict], path: Path, title: str) -> bool:
    """Held-out accuracy and macro-F1 against the round, for every run evaluated more than once (the
    zero-shot score, when present, as round 0); False (nothing written) when no run has a curve."""
    runs = [r for r in rows if len(r.get("curve", [])) > 1]
    if not runs:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    zero = next((r for r in rows if r["run"] == "zero-shot"), None)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    for ax, key in zip(axes, ("accuracy", "macro_f1")):
        for r in runs:
            pts = ([(0, zero[key])] if zero else []) + [(c["round"], c[key]) for c in r["curve"]]
            ax.plot(*zip(*pts), marker="o", label=r["run"])
        ax.set_xlabel("round")
        ax.set_ylabel(key)
        ax.set_ylim(0, 1)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def _load_part(d: Path) -> dict:
    """DIR/results.json, or for a run stopped before it wrote one, its rows from DIR/progress.log."""
    if (d / "results.json").is_file():
        return json.loads((d / "results.json").read_text())
    if not (d / "progress.log").is_file():
        raise SystemExit(f"--merge: {d} has neither results.json nor progress.log")
    rows = [json.loads(line) for line in (d / "progress.log").read_text().splitlines() if line.strip()]
    return {"meta": {"from": str(d / "progress.log"), "partial": True},
            "sft": [r for r in rows if not r["run"].startswith("DPO")],
            "dpo": [r for r in rows if r["run"].startswith("DPO")]}


def merge(dirs: list[str], out: Path) -> None:
    """One table and PNG from runs split over processes (each wrote DIR/results.json)."""
    sft, dpo, meta = [], [], []
    for d in dirs:
        part = _load_part(Path(d))
        sft += part.get("sft", [])
        dpo += [r for r in part.get("dpo", []) if r["run"] not in {x["run"] for x in dpo}]
        meta.append(part["meta"])
    out.mkdir(parents=True, exist_ok=True)
    md = ["## Financial PhraseBank (held-out TEST rows)\n",
          table(sft, ["accuracy", "macro_f1", "eval_loss", "unparseable", "train_loss", "seconds"]), ""]
    if dpo:
        md += ["## Federated DPO, HH-RLHF harmless-base (held-out TEST pairs)\n",
               table(dpo, ["likelihood_accuracy", "preference_accuracy", "reward_margin", "train_loss", "seconds"])]
    if sft:
        plot(sft, out / "utility.png", "FPB, held-out test rows (merged runs)")
        plot_curves(sft, out / "curves.png", "FPB, held-out test rows, by round (merged runs)")
    (out / "results.json").write_text(json.dumps({"meta": meta, "sft": sft, "dpo": dpo}, indent=2))
    (out / "results.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    ap.add_argument("--model", default=default_model())
    ap.add_argument("--data", default=str(_DATA / "financial_phrasebank" / "all-data.csv"))
    ap.add_argument("--hh", default=str(_DATA / "hh-rlhf" / "harmless-base-test.jsonl.gz"))
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--parties", type=int, default=10)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default="", help="comma list of SFT run names (zero-shot always runs)")
    ap.add_argument("--set", action="append", default=[], help="extra config override (repeatable)")
    ap.add_argument("--skip-sft", action="store_true")
    ap.add_argument("--skip-dpo", action="store_true")
    ap.add_argument("--skip-zero-shot", action="store_true", help="(to split the SFT runs over processes)")
    ap.add_argument("--dpo-protocols", default="plain,secagg")
    ap.add_argument("--tag", default="", help='appended to SFT run names, e.g. "4-bit" with --set model.quantization=4bit')
    for k, kind in _PRESET_FLAGS.items():  # override one value of the preset (the centralized row follows)
        ap.add_argument("--" + k.replace("_", "-"), type=kind, default=None, help=f"preset's {k}")
    ap.add_argument("--out", default="bench-out/real_llm")
    ap.add_argument("--resume", action="store_true",
                    help="continue: finished runs in OUT/runs are read back, stopped ones resume from their checkpoint")
    ap.add_argument("--stop-after", type=int, default=None, metavar="K",
                    help="stop each run once K rounds are complete, as a kill would (its checkpoint kept)")
    ap.add_argument("--headline", metavar="JSON", help="also update this machine-readable summary (one entry per run)")
    ap.add_argument("--merge", nargs="+", metavar="DIR", help="merge the results.json of these runs into --out")
    args = ap.parse_args()
    if args.merge:
        return merge(args.merge, Path(args.out))
    p = {**PRESETS[args.preset], **{k: v for k, v in ((k, getattr(args, k)) for k in _PRESET_FLAGS) if v is not None}}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    args.console = Console(stderr=True)
    logfile = (out / "progress.log").open("a", encoding="utf-8")

    def log(row: dict) -> None:
        line = json.dumps({"time": time.strftime("%H:%M:%S"), **row})
        args.console.print(line, highlight=False, soft_wrap=True)
        logfile.write(line + "\n")
        logfile.flush()

    result: dict = {"meta": {"preset": args.preset, **p, "model": args.model, "parties": args.parties,
                             "alpha": args.alpha, "seed": args.seed, "extra": args.set}}
    md = [f"# Real LLM: {Path(args.model).name}, preset {args.preset}\n"]
    if not args.skip_sft:
        rows = run_sft(args, p, out, log)
        result["sft"] = rows
        md += ["## Financial PhraseBank (held-out TEST rows)\n",
               table(rows, ["accuracy", "macro_f1", "eval_loss", "unparseable", "train_loss", "seconds"]), ""]
        plot(rows, out / "utility.png", f"FPB, {args.parties} parties, Dirichlet({args.alpha}), held-out test")
        plot_curves(rows, out / "curves.png", f"FPB, {args.parties} parties, Dirichlet({args.alpha}), by round")
        if args.headline:
            import shlex
            import sys

            update_headline(Path(args.headline), headline_entries(rows, p, args.parties),
                            "python -m benchmarks.real_llm " + shlex.join(sys.argv[1:]))
    if not args.skip_dpo:
        rows = run_dpo(args, p, out, log)
        result["dpo"] = rows
        md += ["## Federated DPO, HH-RLHF harmless-base (held-out TEST pairs)\n",
               table(rows, ["likelihood_accuracy", "preference_accuracy", "reward_margin", "train_loss", "seconds"])]
    (out / "results.json").write_text(json.dumps(result, indent=2))
    (out / "results.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
