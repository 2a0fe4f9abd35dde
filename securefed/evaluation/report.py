"""Turning metric dicts into a one-line markdown summary, and writing result files atomically."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence


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
    """Write via a temp file in the same directory then os.replace, so readers never see a torn
    file and a crash mid-write leaves the old content intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, value: Any) -> None:
    write_text_atomic(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def append_line_atomic(path: Path, line: str) -> None:
    """Append one line by rewriting the file atomically (eval.md is small)."""
    existing = path.read_text(encoding="utf-8") if path.exists() else ""
    if existing and not existing.endswith("\n"):
        existing += "\n"
    write_text_atomic(path, existing + line.rstrip("\n") + "\n")
