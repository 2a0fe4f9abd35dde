"""What a finished run directory holds, read once for export, generation and the model card.

A simulation run: config.json (the resolved config), adapter/ (PEFT), metrics.jsonl, summary.json.
A deployed federation's server folder: adapter/ (its securefed_config.json is the resolved config).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from securefed.config import RootConfig, load_config
from securefed.errors import UserError


@dataclass(frozen=True)
class RunRecord:
    path: Path
    config: RootConfig
    adapter_dir: Path
    metrics: tuple[dict[str, Any], ...]  # one row per round (empty for a deployed server folder)
    summary: dict[str, Any]  # summary.json ({} when absent)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: unreadable ({e})") from None


def open_run(run_dir: str | Path, adapter: str | Path | None = None, device: str | None = None) -> RunRecord:
    """The run at `run_dir` with its adapter (default RUN/adapter); UserError naming what is missing."""
    run = Path(run_dir)
    if not run.is_dir():
        raise UserError(f"{run}: no such run directory")
    adapter_dir = Path(adapter) if adapter is not None else run / "adapter"
    if not (adapter_dir / "adapter_model.safetensors").is_file():
        hint = " (a Local run: pass --adapter RUN/local-adapters/<party>)" if (run / "local-adapters").is_dir() else ""
        raise UserError(f"{adapter_dir}: no adapter_model.safetensors (not a finished run's adapter){hint}")
    config_file = run / "config.json" if (run / "config.json").is_file() else adapter_dir / "securefed_config.json"
    if not config_file.is_file():
        raise UserError(f"{run}: no config.json there (not a run directory)")
    cfg = load_config(config_file, [f"model.device={device}"] if device else [])
    metrics: list[dict[str, Any]] = []
    if (run / "metrics.jsonl").is_file():
        for n, line in enumerate((run / "metrics.jsonl").read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    metrics.append(json.loads(line))
                except json.JSONDecodeError:
                    raise UserError(f"{run / 'metrics.jsonl'} line {n}: not JSON") from None
    summary = _read_json(run / "summary.json") if (run / "summary.json").is_file() else {}
    return RunRecord(run, cfg, adapter_dir, tuple(metrics), summary)
