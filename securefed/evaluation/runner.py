"""`evaluate`: load rows, run one task, write OUT/eval_<task>.json and append to OUT/eval.md."""

from __future__ import annotations

import inspect
import time
from pathlib import Path
from typing import Any

from securefed.data.presets import get_preset, infer_preset
from securefed.errors import ConfigError, DataError, UserError
from securefed.evaluation.report import append_line_atomic, write_json_atomic
from securefed.evaluation.rows import load_rows
from securefed.evaluation.tasks import create


def evaluate(
    task_name: str,
    model: Any,
    tokenizer: Any,
    data_path: str | Path,
    out_dir: str | Path | None = None,
    limit: int | None = None,
    batch_size: int = 8,
    **options: Any,
) -> dict[str, Any]:
    """Run task `task_name` on the rows of `data_path` (first `limit` rows when given).

    Returns {"task", "data", "n", "metrics", "options", "preset", "seconds", "summary"} ("preset": the
    data preset whose columns were inferred, or None). With `out_dir`, the
    same dict goes to out_dir/eval_<task>.json (replaced) and the summary line is appended to
    out_dir/eval.md; both writes are atomic.
    """
    task = create(task_name)
    if limit is not None and limit < 1:
        raise UserError(f"limit must be >= 1, got {limit}")
    _check_options(task, task_name, batch_size, options)
    rows = load_rows(data_path)
    if limit is not None:
        rows = rows[:limit]
    preset = _infer_fields(task_name, rows, options, data_path)
    start = time.monotonic()
    try:
        metrics = task.run(model, tokenizer, rows, batch_size=batch_size, **options)
    except DataError as exc:
        raise DataError(f"{data_path}: {exc}") from exc  # task messages name the row, not the file
    summary = f"{task.summary(metrics)} — {Path(data_path).name}"
    result = {
        "task": task_name,
        "data": str(data_path),
        "n": metrics.get("n", len(rows)),
        "metrics": metrics,
        "options": {k: _jsonable(v) for k, v in options.items()},
        "preset": preset,
        "seconds": round(time.monotonic() - start, 3),
        "summary": summary,
    }
    if out_dir is not None:
        out = Path(out_dir)
        write_json_atomic(out / f"eval_{task_name}.json", result)
        append_line_atomic(out / "eval.md", summary)
    return result


def _infer_fields(task_name: str, rows: list[dict[str, Any]], options: dict[str, Any], data_path: Any) -> str | None:
    """The columns of a labelled file as `simulate` reads them: without --option text_field/label_field
    and without text/label columns, the preset inferred from the first row's columns (FPB's Headline/Sentiment, ...) names them and its
    label list. Returns the inferred preset's name (None when nothing was inferred)."""
    if task_name != "classification" or not rows or {"text_field", "label_field"} & set(options):
        return None
    if {"text", "label"} <= set(rows[0]):
        return None  # the task's own defaults
    try:
        name = infer_preset(rows[0], str(data_path))
    except ConfigError:
        return None  # the task's own error names the missing field
    preset = get_preset(name)
    if preset.kind != "classification":
        return None
    options.setdefault("text_field", preset.fields["text"])
    options.setdefault("label_field", preset.fields["label"])
    if preset.labels is not None:
        options.setdefault("labels", list(preset.labels))
    return name


def _check_options(task: Any, task_name: str, batch_size: int, options: dict[str, Any]) -> None:
    """Turn a misspelt option into a UserError listing the valid ones (instead of a TypeError)."""
    parameters = inspect.signature(task.run).parameters
    known = [n for n, p in parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise UserError(
            f"unknown option(s) {', '.join(unknown)} for task {task_name!r}; "
            f"known: {', '.join(n for n in known if n != 'batch_size')}"
        )
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")


def _jsonable(value: Any) -> Any:
    # Options may hold objects (a reference model); record their type instead of failing to save.
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return f"<{type(value).__name__}>"
