"""Table (markdown) and plot of benchmarks/byzantine.py's rows.jsonl: held-out accuracy after R rounds
under each attack, against the same aggregator's attack-free run, and rounds rejected."""

from __future__ import annotations

import json
from pathlib import Path


def load_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            rows[tuple(row["key"])] = row  # a rerun's row replaces an older one
    return list(rows.values())


def _order(values, known):
    return [v for v in known if v in values] + sorted(v for v in values if v not in known)


def table(rows: list[dict]) -> str:
    from benchmarks.byzantine import AGGREGATORS, ATTACKS

    scenarios = _order({(r["attack"], r["malicious"]) for r in rows if r["attack"] != "none"},
                       [(a, k) for a in ATTACKS for k in (1, 3)])
    head = "| task | algorithm | aggregator | clean | " + " | ".join(f"{a} x{k}" for a, k in scenarios) + " |"
    lines = [head, "|" + "---|" * (4 + len(scenarios))]
    by = {tuple(r["key"]): r for r in rows}
    for task in _order({r["task"] for r in rows}, ["demo", "fpb"]):
        for alg in _order({r["algorithm"] for r in rows if r["task"] == task}, ["fedavg", "fedadam"]):
            for agg in _order({r["aggregator"] for r in rows if r["task"] == task}, AGGREGATORS):
                clean = by.get((task, alg, agg, "none", 0))
                cells = [task, alg, agg, "-" if clean is None else _cell(clean, None)]
                for a, k in scenarios:
                    r = by.get((task, alg, agg, a, k))
                    cells.append("-" if r is None else _cell(r, clean))
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(r: dict, clean: dict | None) -> str:
    s = f"{r['accuracy']:.3f}"
    if clean is not None:
        s += f" ({r['accuracy'] - clean['accuracy']:+.2f})"
    if r["rejected"]:
        s += f" rej {r['rejected']}/{r['rounds']}"
    return s


def plot(rows: list[dict], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    from benchmarks.byzantine import AGGREGATORS, ATTACKS

    panels = sorted({(r["task"], r["algorithm"], r["malicious"]) for r in rows if r["malicious"]})
    if not panels:
        return False
    aggs = _order({r["aggregator"] for r in rows}, AGGREGATORS)
    attacks = ["none"] + _order({r["attack"] for r in rows if r["attack"] != "none"}, ATTACKS)
    by = {tuple(r["key"]): r for r in rows}
    cols = 2
    fig, axes = plt.subplots((len(panels) + cols - 1) // cols, cols, figsize=(12, 3.2 * ((len(panels) + 1) // 2)),
                             squeeze=False)
    width = 0.8 / len(aggs)
    for ax, (task, alg, k) in zip(axes.flat, panels):
        for j, agg in enumerate(aggs):
            ys = [(by.get((task, alg, agg, a, 0 if a == "none" else k)) or {}).get("accuracy", float("nan"))
                  for a in attacks]
            ax.bar([i + (j - len(aggs) / 2 + 0.5) * width for i in range(len(attacks))], ys, width, label=agg)
            for i, a in enumerate(attacks):
                r = by.get((task, alg, agg, a, 0 if a == "none" else k))
                if r and r["rejected"]:
                    ax.text(i + (j - len(aggs) / 2 + 0.5) * width, 0.02, "R", ha="center", fontsize=7)
        ax.set_xticks(range(len(attacks)), attacks)
        ax.set_ylim(0, 1)
        ax.set_title(f"{task}, {alg}, {k} of 10 malicious", fontsize=9)
        ax.set_ylabel("held-out accuracy")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, ncol=3)
    fig.suptitle("Accuracy after R attacked rounds ('none' = attack-free; R = rounds rejected by the sum check)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_report(rows_path: Path, out: Path, command: str) -> None:
    rows = load_rows(rows_path)
    if not rows:
        print("no rows yet")
        return
    text = f"`{command}`\n\n{table(rows)}\n"
    (out / "results.md").write_text(text)
    plotted = plot(rows, out / "accuracy.png")
    print(text + (f"\nplot: {out / 'accuracy.png'}" if plotted else ""))
