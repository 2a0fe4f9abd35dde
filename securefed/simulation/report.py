"""Human-readable summary of a finished run (rich table)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from rich.console import Console
from rich.table import Table

SHOWN = ("train_loss", "eval_loss", "accuracy", "macro_f1", "unparseable", "preference_accuracy", "reward_margin",
         "dp_epsilon_max", "bytes_sent_per_party")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1e4 else f"{v:.3g}"
    return "-" if v is None else str(v)


def print_summary(summary: Mapping[str, Any], out_dir: Path, console: Console) -> None:
    first, final = summary.get("first") or {}, summary.get("final") or {}
    table = Table(title=f"{summary['algorithm']} / {summary['protocol']}: {summary['rounds']} rounds, "
                        f"{summary['parties']} parties")
    table.add_column("metric")
    table.add_column(f"round {first.get('round', '-')}", justify="right")
    table.add_column(f"round {final.get('round', '-')}", justify="right")
    for key in SHOWN:
        if key in final or key in first:
            table.add_row(key, _fmt(first.get(key)), _fmt(final.get(key)))
    console.print(table)
    if summary.get("skipped_rows"):
        console.print(f"skipped {summary['skipped_rows']} malformed data rows (data.skip_malformed; row numbers "
                      f"in run.log)")
    console.print(f"run directory: {out_dir}  (metrics.jsonl, summary.json, run.log, adapter/)")


def print_partition(report: Any, party_ids: tuple[str, ...], console: Console) -> None:
    """Per-party sizes and label histograms (the same numbers are saved to partition.json)."""
    headers, rows = report.table()
    table = Table(title="data per party")
    for h in headers:
        table.add_column(str(h), justify="right")
    for row in rows:
        table.add_row(*[_fmt(v) for v in row])
    console.print(table)
