"""`--rescore`: every finished run's final adapter scored again on ALL of its held-out TEST rows.

The table's figures come from a seeded sample of the TEST split (`evaluation.max_examples`, 200 in the
headline recipe), which leaves +-0.06 at 95% on an accuracy near 0.8: runs that land within that of
each other cannot be told apart. Scoring the same final adapters on every TEST row (969 for FPB at
test_fraction 0.2; still none trained on) narrows it about 2.2x. Trains nothing. Resumable: a run
whose adapter was already scored (same SHA-256) is read back, so a killed rescore loses one run.

Local runs are left out: each of their parties has its own adapter, so one would cost 10 scorings.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path

from safetensors.torch import load_file, save_file

from benchmarks.real_llm.report import RESULT, ZERO_SHOT, adapter_sha256, all_test, finished_row, run_name
from securefed.atomic import atomic_write_text
from securefed.errors import UserError
from securefed.evaluation.heldout import evaluate_run

ALL_ROWS = 10**9  # as evaluation.max_examples: at least the split's size, so every TEST row is kept


def interval95(accuracy: float, n: int) -> float:
    """Half-width of the normal-approximation 95% interval of an accuracy measured on n rows."""
    return 1.96 * math.sqrt(accuracy * (1 - accuracy) / n)


def _figures(result: dict, seconds: float) -> dict:
    m = result["metrics"]
    return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "heldout_loss": m["eval_loss"],
            "rows_scored": result["n"], "split": result["split"], "seconds": round(seconds, 1)}


def _score(run_dir: Path, adapter: Path | None = None) -> dict:
    t0 = time.perf_counter()
    try:  # split "test": refused, never swapped for the eval split, when the run has no TEST rows
        result = evaluate_run(run_dir, adapter, "test", limit=ALL_ROWS)
    except UserError as e:
        raise SystemExit(f"--rescore: {run_dir}: {e}") from None
    return _figures(result, time.perf_counter() - t0)


def _zero_shot(run_dir: Path) -> dict:
    """The base model on every TEST row: the run's adapter with every LoRA B set to zero, which makes
    each adapted layer exactly the base layer (W + B A = W)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = run_dir / "adapter"
        weights = {k: (v.zero_() if ".lora_B." in k else v)
                   for k, v in load_file(str(src / "adapter_model.safetensors")).items()}
        if not any(".lora_B." in k for k in weights):
            raise SystemExit(f"--rescore: {src} has no lora_B weights to zero for the zero-shot row")
        save_file(weights, str(Path(tmp) / "adapter_model.safetensors"))  # the run's config gives the rest
        return _score(run_dir, Path(tmp))


def rescore(out: Path, only: list[str], log) -> list[dict]:
    """Rescore every finished non-Local run under OUT/runs (or those named in `only`), then the base
    model once; one row per run: its sampled figures beside its all-TEST figures."""
    runs = []
    for d in sorted((out / "runs").iterdir()) if (out / "runs").is_dir() else []:
        name = run_name(d)
        row = finished_row(d)
        if row is None or row["algorithm"] == "local" or (only and name not in only):
            continue
        runs.append((name, d, row))
    missing = sorted(set(only) - {n for n, _, _ in runs})
    if missing:
        raise SystemExit(f"--rescore --only: no finished non-Local run named {missing} under {out / 'runs'}")
    if not runs:
        raise SystemExit(f"--rescore: no finished non-Local run under {out / 'runs'}")
    rows = []
    for name, d, row in runs:
        figures = all_test(d)
        if figures is None:
            log({"run": name, "rescoring": f"every TEST row, adapter {d / 'adapter'}"})
            figures = _score(d)
            atomic_write_text(d / RESULT, json.dumps({"run": name, "adapter_sha256": adapter_sha256(d),
                                                      "figures": figures}, indent=2) + "\n")
        rows.append({"run": name, "sample_accuracy": row["accuracy"], "sample_rows": row["rows_scored"], **figures})
        log({"run": name, "all_test": figures})
    zero = out / ZERO_SHOT
    if not zero.is_file():
        log({"run": "zero-shot", "rescoring": "every TEST row, the base model"})
        atomic_write_text(zero, json.dumps(_zero_shot(runs[0][1]), indent=2) + "\n")
    figures = json.loads(zero.read_text())
    sample = json.loads((out / "zero-shot.json").read_text()) if (out / "zero-shot.json").is_file() else {}
    rows.insert(0, {"run": "zero-shot", "sample_accuracy": sample.get("accuracy"),
                    "sample_rows": sample.get("rows_scored"), **figures})
    log({"run": "zero-shot", "all_test": figures})
    return rows


def rescore_table(rows: list[dict]) -> str:
    lines = ["| run | accuracy, sampled rows | accuracy, all TEST rows (95%) | macro-F1 | held-out loss | rows |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        sampled = "-" if r["sample_accuracy"] is None else f"{r['sample_accuracy']:.3f} ({r['sample_rows']})"
        half = interval95(r["accuracy"], r["rows_scored"])
        lines.append(f"| {r['run']} | {sampled} | {r['accuracy']:.3f} +-{half:.3f} | {r['macro_f1']:.3f} "
                     f"| {r['heldout_loss']:.3f} | {r['rows_scored']} |")
    return "\n".join(lines)


def plot_rescore(rows: list[dict], path: Path) -> None:
    """Accuracy on all TEST rows with its 95% interval, beside the sampled rows' figure, one line a run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.2))
    ys = list(range(len(rows)))
    ax.errorbar([r["accuracy"] for r in rows], ys, xerr=[interval95(r["accuracy"], r["rows_scored"]) for r in rows],
                fmt="o", capsize=3, label="all TEST rows, 95% interval")
    sampled = [(r["sample_accuracy"], y) for r, y in zip(rows, ys) if r["sample_accuracy"] is not None]
    if sampled:
        ax.plot(*zip(*sampled), "x", color="gray", label="the table's sampled rows")
    ax.set_yticks(ys, [r["run"] for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("held-out accuracy")
    ax.set_xlim(0, 1)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title(f"FPB, final adapters on all {rows[0]['rows_scored']} TEST rows")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
