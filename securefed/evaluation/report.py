"""Turning metric dicts into a one-line markdown summary, and writing result files atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from securefed.atomic import atomic_write_text


def summary_line(task: str, metrics: Mapping[str, Any], keys: Sequence[str]) -> str:
    """'- **task**: key1 0.8123 · key2 12.3456 (n=10)' using the keys present in `metrics`."""
    parts = []
    for key in keys:
        if key in metrics:
            value = metrics[key]
            parts.append(f"{key} {value:.4f}" if isinstance(value, float) else f"{key} {value}")
    count = f" (n={metrics['n']})" if "n" in metrics else ""
    return f"- **{task}**: {' · '.join(parts)}{count}"


def write_text_atomic(path: Path, text: str) -> None:
    """Readers never see a torn file; a crash mid-write leaves the old content intact."""
    atomic_write_text(path, text)


def write_json_atomic(path: Path, value: Any) -> None:
    write_text_atomic(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def append_line_atomic(path: Path, line: str) -> None:
    """Append one line by rewriting the file atomically (eval.md is small)."""
    existing = path.read_text(encoding="utf-8") if path.exists() else ""
    if existing and not existing.endswith("\n"):
        existing += "\n"
    write_text_atomic(path, existing + line.rstrip("\n") + "\n")
