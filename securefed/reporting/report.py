"""`securefed report RUN [RUN...] --out DIR`: how runs compare, as people look at it.

RUN is a simulation's run directory or a deployment's server folder (deploy/run_record.py).
Reads each run's metrics.jsonl (one JSON object a round) and summary.json, and writes into DIR:
  loss.png, accuracy.png, epsilon.png, bytes.png   one line per run and metric, x = round
  report.md                                        a table of the final round of each run + the images
  report.html                                      the same, self-contained (images inlined as base64)
A figure whose metrics no run recorded (e.g. epsilon without DP) is left out, and report.md says so.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from securefed.atomic import atomic_write_bytes
from securefed.errors import UserError


@dataclass(frozen=True)
class Figure:
    name: str  # file stem
    title: str
    ylabel: str
    metrics: tuple[str, ...]  # plotted as solid, dashed, dotted lines of the run's colour
    log_y: bool = False


FIGURES = (
    Figure("loss", "Loss per round", "loss", ("train_loss", "eval_loss")),
    Figure("accuracy", "Held-out accuracy / F1 per round", "score",
           ("accuracy", "macro_f1", "preference_accuracy")),
    Figure("epsilon", "Privacy spent (max epsilon over parties)", "epsilon", ("dp_epsilon_max",)),
    Figure("bytes", "Upload per party per round", "bytes", ("bytes_sent_per_party", "fp32_bytes_per_party"),
           log_y=True),
)
STYLES = ("-", "--", ":")
TABLE = (("train_loss", "loss"), ("eval_loss", "eval loss"), ("accuracy", "accuracy"), ("macro_f1", "macro F1"),
         ("preference_accuracy", "pref. acc."), ("dp_epsilon_max", "epsilon"), ("bytes_sent_per_party", "bytes/party"))


@dataclass(frozen=True)
class Run:
    label: str
    path: Path
    rows: tuple[dict[str, Any], ...]
    summary: dict[str, Any]


def run_folder(path: Path) -> Path:
    """The run directory behind `path`: a simulation's OUT, or a deployment's server folder (which the
    coordinator keeps as one), also when given the deployment's root or its state/ transport log."""
    if (path / "checkpoint.bin").is_file() and (path.parent / "metrics.jsonl").is_file():
        return path.parent  # fed/server/state: per-attempt transport records, not rounds
    if not (path / "metrics.jsonl").is_file() and (path / "server" / "metrics.jsonl").is_file():
        return path / "server"  # the provision --out folder
    if not (path / "metrics.jsonl").is_file():
        raise UserError(f"{path}: no metrics.jsonl (not a run directory, nor a deployment's server folder "
                        "with a round done)")
    return path


def load_run(path: Path) -> Run:
    path = run_folder(path)
    metrics = path / "metrics.jsonl"
    rows = []
    for number, line in enumerate(metrics.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{metrics} line {number}: invalid JSON ({exc.msg}, column {exc.colno})") from None
        if not isinstance(row, dict) or not isinstance(row.get("round"), int):
            raise UserError(f"{metrics} line {number}: not a round's metrics (no integer 'round')")
        rows.append(row)
    if not rows:
        raise UserError(f"{metrics}: no rounds recorded yet")
    summary_path = path / "summary.json"
    summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else {}
    return Run(path.name, path, tuple(rows), summary)


def _labels(paths: Sequence[Path]) -> list[str]:
    names = [p.name for p in paths]
    return names if len(set(names)) == len(names) else [str(p) for p in paths]


def _plot(figure: Figure, runs: Sequence[Run], out: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed (CI, servers)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    drawn = False
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, run in enumerate(runs):
        for style, key in zip(STYLES, figure.metrics):
            points = [(r["round"], r[key]) for r in run.rows if isinstance(r.get(key), (int, float))]
            if not points:
                continue
            xs, ys = zip(*points)
            # fp32_bytes_per_party: what the same update costs sent as float32 in the clear (the baseline)
            label = f"{run.label}: " + ("fp32 in the clear" if key == "fp32_bytes_per_party" else key)
            ax.plot(xs, ys, linestyle=style, marker="o", markersize=3, color=colours[i % len(colours)], label=label)
            drawn = True
    if drawn:
        ax.set_title(figure.title)
        ax.set_xlabel("round")
        ax.set_ylabel(figure.ylabel)
        if figure.log_y:
            ax.set_yscale("log")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        atomic_write_bytes(out, buffer.getvalue(), mode=0o644)
    plt.close(fig)
    return drawn


def _fmt(value: Any, key: str) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "-"
    if key == "bytes_sent_per_party":
        return f"{value / 1000:.1f} kB"
    return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.3g}"


def _table(runs: Sequence[Run]) -> tuple[list[str], list[list[str]]]:
    header = ["run", "algorithm", "protocol", "rounds"] + [name for _, name in TABLE] + ["seconds"]
    body = []
    for run in runs:
        final = run.rows[-1]
        evaluated = next((r for r in reversed(run.rows) if "eval_loss" in r or "accuracy" in r), final)
        cells = [run.label, str(final.get("algorithm", run.summary.get("algorithm", "-"))),
                 str(final.get("protocol", run.summary.get("protocol", "-"))), str(final["round"])]
        for key, _ in TABLE:
            source = final if key in final else evaluated
            cells.append(_fmt(source.get(key), key))
        cells.append(f"{sum(r.get('seconds', 0.0) for r in run.rows):.1f}")
        body.append(cells)
    return header, body


def write_report(run_dirs: Sequence[Path], out: Path) -> dict[str, Any]:
    """Write the figures, report.md and report.html for these runs into `out`; returns what was
    written ({"figures": [...], "skipped": [...], "markdown": path, "html": path})."""
    if not run_dirs:
        raise UserError("report: name at least one run directory")
    runs = [load_run(Path(p)) for p in run_dirs]
    runs = [Run(label, r.path, r.rows, r.summary) for label, r in zip(_labels([r.path for r in runs]), runs)]
    out.mkdir(parents=True, exist_ok=True)
    figures, skipped = [], []
    for figure in FIGURES:
        (figures if _plot(figure, runs, out / f"{figure.name}.png") else skipped).append(figure)
    header, body = _table(runs)
    md = ["# securefed report", "", f"Runs: {', '.join(f'`{r.path}`' for r in runs)}", "",
          "Final round of each run (evaluation figures from the last evaluated round):", "",
          "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(row) + " |" for row in body]
    md.append("")
    for figure in figures:
        md += [f"## {figure.title}", "", f"![{figure.title}]({figure.name}.png)", ""]
    for figure in skipped:
        md.append(f"- {figure.title}: not recorded by these runs ({', '.join(figure.metrics)})")
    atomic_write_bytes(out / "report.md", ("\n".join(md).rstrip() + "\n").encode(), mode=0o644)
    atomic_write_bytes(out / "report.html", _html(runs, header, body, figures, skipped, out).encode(), mode=0o644)
    return {"figures": [out / f"{f.name}.png" for f in figures], "skipped": [f.name for f in skipped],
            "markdown": out / "report.md", "html": out / "report.html"}


def _html(runs: Sequence[Run], header: list[str], body: list[list[str]], figures: Sequence[Figure],
          skipped: Sequence[Figure], out: Path) -> str:
    esc = html.escape
    rows = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in body)
    images = "".join(
        f"<h2>{esc(f.title)}</h2><img alt='{esc(f.title)}' src='data:image/png;base64,"
        f"{base64.b64encode((out / f'{f.name}.png').read_bytes()).decode()}'>" for f in figures)
    notes = "".join(f"<li>{esc(f.title)}: not recorded by these runs</li>" for f in skipped)
    return ("<!doctype html><html><head><meta charset='utf-8'><title>securefed report</title><style>"
            "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}img{max-width:100%}</style></head><body>"
            f"<h1>securefed report</h1><p>Runs: {esc(', '.join(str(r.path) for r in runs))}</p>"
            f"<table><tr>{''.join(f'<th>{esc(h)}</th>' for h in header)}</tr>{rows}</table>"
            f"{images}<ul>{notes}</ul></body></html>\n")
