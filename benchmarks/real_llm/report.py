"""The real-LLM benchmark's outputs: tables, bar and curve plots, merging runs, the headline JSON."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from securefed.algorithms.config import DEFAULT_SERVER_LR
from securefed.atomic import atomic_write_text
from securefed.membership import parties_per_round

RUN_NAME = "run-name.txt"  # in a run's directory: its name in tables (the directory name is a slug of it)
RESULT = "heldout-all-test.json"  # in a run's directory, beside its adapter
ZERO_SHOT = "zero-shot-all-test.json"  # in OUT, beside zero-shot.json
SFT_COLUMNS = ["accuracy", "macro_f1", "eval_loss", "unparseable", "train_loss", "seconds"]
DPO_COLUMNS = ["likelihood_accuracy", "preference_accuracy", "reward_margin", "train_loss", "seconds"]


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
    legend_rows = -(-len(runs) // 3)  # the legend goes below both panels, 3 runs a line: it hides no curve
    fig, axes = plt.subplots(1, 2, figsize=(10, 4 + 0.22 * legend_rows), sharex=True)
    for ax, key in zip(axes, ("accuracy", "macro_f1")):
        for r in runs:
            pts = ([(0, zero[key])] if zero else []) + [(c["round"], c[key]) for c in r["curve"]]
            ax.plot(*zip(*pts), marker="o", label=r["run"])
        ax.set_xlabel("round")
        ax.set_ylabel(key)
        ax.set_ylim(0, 1)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.22 * legend_rows / (4 + 0.22 * legend_rows) + 0.01, 1, 1))
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
          table(sft, SFT_COLUMNS), ""]
    if dpo:
        md += ["## Federated DPO, HH-RLHF harmless-base (held-out TEST pairs)\n",
               table(dpo, DPO_COLUMNS)]
    if sft:
        plot(sft, out / "utility.png", "FPB, held-out test rows (merged runs)")
        plot_curves(sft, out / "curves.png", "FPB, held-out test rows, by round (merged runs)")
    (out / "results.json").write_text(json.dumps({"meta": meta, "sft": sft, "dpo": dpo}, indent=2))
    (out / "results.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


def headline_entries(rows: list[dict]) -> list[dict]:
    """docs/results/real_llm_headline.json's schema: one entry per run, held-out figures only."""
    out = []
    for r in rows:
        kind = ("zero-shot" if r["run"] == "zero-shot" else "centralized" if r["run"].startswith("centralized")
                else "local" if r.get("algorithm") == "local" else "federated")
        steps = 0 if kind == "zero-shot" else r["rounds"] * r["local_steps"]
        if kind == "local" and r.get("sampled"):  # a party trains only in the rounds it is sampled
            steps = steps * r["sampled"] / r["parties"]
        out.append({"run": r["run"], "kind": kind, "algorithm": r.get("algorithm"), "protocol": r.get("protocol"),
                    "server_lr": r.get("server_lr"), "server_lr_schedule": r.get("server_lr_schedule"),
                    "epsilon": r.get("epsilon"), "rounds": r.get("rounds", 0),
                    "sequential_steps": steps,
                    "accuracy": r["accuracy"], "macro_f1": r["macro_f1"], "heldout_loss": r["eval_loss"],
                    "rows_scored": r["rows_scored"], "wall_s": round(r["seconds"], 1),
                    **({"all_test": r["all_test"]} if r.get("all_test") else {})})
    return out


def update_headline(path: Path, entries: list[dict], command: str, keep_commands: bool = False) -> None:
    """Replace this invocation's runs in the summary (matched by run name), keep the others.
    keep_commands: an entry already listed keeps the command that trained it (a --report rewrite)."""
    doc = json.loads(path.read_text()) if path.is_file() else {"runs": []}
    names = {e["run"] for e in entries}
    before = {e["run"]: e.get("command", command) for e in doc["runs"]}
    doc["runs"] = [e for e in doc["runs"] if e["run"] not in names] + [
        {**e, "command": before.get(e["run"], command) if keep_commands else command} for e in entries]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")


def eval_curve(metrics: Path) -> list[dict]:
    """(round, accuracy, macro-F1, eval loss) at every evaluated round of a run's metrics.jsonl."""
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return [{k: r[k] for k in ("round", "accuracy", "macro_f1", "eval_loss")} for r in rows if "accuracy" in r]


def run_name(run_dir: Path) -> str:
    """A run's name in tables: its RUN_NAME file, else the directory's name with dashes read as spaces."""
    named = run_dir / RUN_NAME
    return named.read_text().strip() if named.is_file() else run_dir.name.replace("-", " ")


def adapter_sha256(run_dir: Path) -> str:
    return hashlib.sha256((run_dir / "adapter" / "adapter_model.safetensors").read_bytes()).hexdigest()


def all_test(run_dir: Path) -> dict | None:
    """The all-TEST figures of the run's current adapter, or None (not rescored, or retrained since)."""
    path = run_dir / RESULT
    if not path.is_file() or not (run_dir / "adapter" / "adapter_model.safetensors").is_file():
        return None
    got = json.loads(path.read_text())
    return got["figures"] if got.get("adapter_sha256") == adapter_sha256(run_dir) else None


def finished_row(run_dir: Path, rounds: int | None = None) -> dict | None:
    """A finished run's row (final held-out figures, curve, wall seconds summed over its rounds, so a
    resumed run counts each round once), or None when the run has not completed every round."""
    metrics = run_dir / "metrics.jsonl"
    if not (run_dir / "summary.json").is_file() or not metrics.is_file():
        return None
    history = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    cfg = json.loads((run_dir / "config.json").read_text())
    rounds = cfg["rounds"] if rounds is None else rounds
    if len(history) < rounds:
        return None
    final = history[-1]
    row = {k: final[k] for k in ("accuracy", "macro_f1", "eval_loss", "unparseable")}
    row.update(train_loss=final["train_loss"], seconds=sum(h.get("seconds", 0.0) for h in history),
               curve=eval_curve(metrics), rounds=rounds, algorithm=cfg["algorithm"]["name"],
               protocol=cfg["aggregation"]["protocol"], local_steps=cfg["training"]["max_steps"],
               server_lr=cfg["algorithm"].get("server_lr") or DEFAULT_SERVER_LR.get(cfg["algorithm"]["name"], 1.0),
               server_lr_schedule=cfg["algorithm"].get("server_lr_schedule", "constant"),
               rows_scored=int(final["eval_rows"]), parties=cfg["parties"],
               sampled=parties_per_round(cfg["parties"], cfg["sampling"]["count"], cfg["sampling"]["fraction"]))
    if cfg["privacy"]["mechanism"] != "none":
        row["epsilon"] = final.get("dp_epsilon_max")
    if (rescored := all_test(run_dir)) is not None:
        row["all_test"] = rescored
    return row


def collect(out: Path) -> list[dict]:
    """Every finished run under OUT/runs (and OUT/zero-shot.json), for one table over runs that took
    several invocations (or sessions), named by their RUN_NAME file (else the directory's name with
    dashes read as spaces)."""
    rows = [json.loads((out / "zero-shot.json").read_text())] if (out / "zero-shot.json").is_file() else []
    if rows and (out / ZERO_SHOT).is_file():
        rows[0]["all_test"] = json.loads((out / ZERO_SHOT).read_text())
    order = {"zero-shot": 0, "centralized": 1, "local": 2}
    for d in sorted((out / "runs").iterdir()) if (out / "runs").is_dir() else []:
        row = finished_row(d)
        if row is not None:
            rows.append({"run": run_name(d), **row})
    return sorted(rows, key=lambda r: (order.get(r["run"], 3), r.get("epsilon") is not None, r["run"]))
