"""Every FL algorithm vs Local on Financial PhraseBank (10 parties, Dirichlet over labels).

    python -m benchmarks.fl_vs_local [--quick] [--model default] [--device auto] [--out bench-out/fl_vs_local]

Writes OUT/results.json, OUT/results.md and OUT/accuracy.png; prints the table. All algorithms run
side by side in one process on the same data split, model and seed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from securefed.config import load_config
from securefed.simulation.runner import simulate

ALGORITHMS = ["fedavg", "fedprox", "scaffold", "fedavgm", "fedadagrad", "fedyogi", "fedadam", "local"]
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "financial_phrasebank" / "all-data.csv"


def overrides(args: argparse.Namespace) -> list[str]:
    rounds, steps, evaln = (3, 3, 60) if args.quick else (args.rounds, args.steps, 300)
    return [
        f"model.name_or_path={args.model}", f"model.device={args.device}",
        f"data.source={args.data}", "data.preset=financial-phrasebank",
        "data.partition.method=dirichlet", f"data.partition.alpha={args.alpha}",
        f"data.eval_max={evaln}", f"evaluation.max_examples={evaln}",
        f"parties={args.parties}", f"rounds={rounds}", f"seed={args.seed}",
        "lora.target_modules=all-linear", f"training.max_steps={steps}", "training.batch_size=8",
        f"training.lr={args.lr}", "training.max_length=96", f"evaluation.every={max(1, rounds // 2)}",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--model", default="default")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--parties", type=int, default=10)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--algorithms", default=",".join(ALGORITHMS))
    ap.add_argument("--quick", action="store_true", help="tiny run for CI")
    ap.add_argument("--out", default="bench-out/fl_vs_local")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=True)
    results = []
    for name in args.algorithms.split(","):
        cfg = load_config(None, overrides(args) + [f"algorithm.name={name}"])
        run_dir = out / "runs" / name
        if run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)
        t0 = time.perf_counter()
        summary = simulate(cfg, run_dir, console=console)
        final = summary["final"]
        results.append({"algorithm": name, "accuracy": final["accuracy"], "macro_f1": final["macro_f1"],
                        "eval_loss": final["eval_loss"], "unparseable": final["unparseable"],
                        "seconds": time.perf_counter() - t0})
    meta = {"data": args.data, "parties": args.parties, "alpha": args.alpha, "model": args.model,
            "overrides": overrides(args)}
    (out / "results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    local = next((r for r in results if r["algorithm"] == "local"), None)
    lines = ["| algorithm | accuracy | macro-F1 | eval loss | unparseable | vs Local (acc) | seconds |",
             "|---|---|---|---|---|---|---|"]
    table = Table(title=f"FL vs Local: Financial PhraseBank, {args.parties} parties, Dirichlet({args.alpha})")
    for col in ("algorithm", "accuracy", "macro-F1", "eval loss", "unparseable", "vs Local", "s"):
        table.add_column(col, justify="right")
    for r in results:
        vs = f"{r['accuracy'] - local['accuracy']:+.3f}" if local else "-"
        cells = [r["algorithm"], f"{r['accuracy']:.3f}", f"{r['macro_f1']:.3f}", f"{r['eval_loss']:.3f}",
                 f"{r['unparseable']:.3f}", vs, f"{r['seconds']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
        table.add_row(*cells)
    (out / "results.md").write_text("\n".join(lines) + "\n")
    Console().print(table)
    _plot(results, out / "accuracy.png")


def _plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["algorithm"] for r in results]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], [r["accuracy"] for r in results], 0.4, label="accuracy")
    ax.bar([x + 0.2 for x in xs], [r["macro_f1"] for r in results], 0.4, label="macro-F1")
    ax.set_xticks(list(xs), names, rotation=30)
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title("FL algorithms vs Local (Financial PhraseBank)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
