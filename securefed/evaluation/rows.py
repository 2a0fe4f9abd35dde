"""Loading evaluation rows from local files and reading validated fields out of them.

Rows are plain dicts. Row numbers in messages are 1-based positions in the loaded list; file
errors name the file and the line (JSONL, CSV) where it went wrong.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Sequence

from securefed.data.readers import data_suffix, read_text
from securefed.errors import DataError, UserError

SUFFIXES = (".jsonl", ".json", ".csv")  # each also gzipped (.jsonl.gz, ...)


def load_rows(path: str | Path) -> list[dict[str, Any]]:
    """Read rows from a .jsonl (one object a line), .json (a list of objects, or an object with one
    list-valued key such as "data") or .csv (header row) file. Raises DataError naming the problem.
    """
    file = Path(path)
    if not file.is_file():
        raise DataError(f"{file}: no such data file")
    suffix = data_suffix(file)  # data.jsonl.gz reads as jsonl
    text = read_text(file)  # utf-8-sig: tolerate a BOM from spreadsheet tools
    if suffix == ".jsonl":
        rows = _jsonl_rows(file, text)
    elif suffix == ".json":
        rows = _json_rows(file, text)
    elif suffix == ".csv":
        rows = _csv_rows(file, text)
    else:
        raise DataError(
            f"{file}: unsupported data format {suffix!r}; use one of {', '.join(SUFFIXES)}"
        )
    if not rows:
        raise DataError(f"{file}: contains no rows")
    return rows


def _jsonl_rows(file: Path, text: str) -> list[dict[str, Any]]:
    rows = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue  # blank lines (often a trailing one) are not rows
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{file}: line {line_number}: invalid JSON ({exc.msg}, column {exc.colno})") from exc
        if not isinstance(value, dict):
            raise DataError(
                f"{file}: line {line_number}: expected a JSON object, got {type(value).__name__}"
            )
        rows.append(value)
    return rows


def _json_rows(file: Path, text: str) -> list[dict[str, Any]]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{file}: line {exc.lineno}: invalid JSON ({exc.msg})") from exc
    if isinstance(value, dict):
        lists = [k for k, v in value.items() if isinstance(v, list)]
        if len(lists) != 1:
            raise DataError(
                f"{file}: expected a list of objects, or an object with exactly one list "
                f"(found list keys: {lists or 'none'})"
            )
        value = value[lists[0]]
    if not isinstance(value, list):
        raise DataError(f"{file}: expected a list of objects, got {type(value).__name__}")
    for index, row in enumerate(value):
        if not isinstance(row, dict):
            raise DataError(f"{file}: item {index}: expected an object, got {type(row).__name__}")
    return value


def _csv_rows(file: Path, text: str) -> list[dict[str, Any]]:
    # StringIO rather than splitlines(): quoted cells may contain newlines.
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        return []
    header = [h.strip() for h in header]
    if any(not h for h in header) or len(set(header)) != len(header):
        raise DataError(f"{file}: line 1: the header needs unique, non-empty column names")
    rows = []
    for row_values in reader:
        line_number = reader.line_num
        if not any(v.strip() for v in row_values):
            continue
        if len(row_values) != len(header):
            raise DataError(
                f"{file}: line {line_number}: {len(row_values)} values for {len(header)} columns"
            )
        rows.append(dict(zip(header, row_values)))
    return rows


def field(row: dict[str, Any], index: int, names: Sequence[str]) -> Any:
    """Value of the first of `names` present in `row` (aliases, e.g. ("prompt", "goal"))."""
    for name in names:
        if name in row and row[name] is not None:
            return row[name]
    wanted = " or ".join(repr(n) for n in names)
    have = ", ".join(sorted(map(str, row))) or "none"
    raise DataError(f"row {index + 1}: missing field {wanted} (fields present: {have})")


def text(row: dict[str, Any], index: int, names: Sequence[str], allow_empty: bool = False) -> str:
    """Like `field`, but the value must be a string (non-empty unless `allow_empty`)."""
    value = field(row, index, names)
    name = next(n for n in names if n in row and row[n] is not None)
    if not isinstance(value, str):
        raise DataError(f"row {index + 1}: field {name!r} must be text, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise DataError(f"row {index + 1}: field {name!r} is empty")
    return value


def require_rows(rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        raise DataError("no rows to evaluate")
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(f"row {index + 1}: expected a mapping, got {type(row).__name__}")


def fill_template(template: str, **values: str) -> str:
    """Replace `{name}` placeholders for the given names only.

    Unlike `str.format`, other braces are left alone, so prompts containing code or JSON work.
    """
    for name, value in values.items():
        template = template.replace("{" + name + "}", value)
    return template


def check_template(template: str, *names: str) -> None:
    missing = [n for n in names if "{" + n + "}" not in template]
    if missing:
        raise UserError(
            f"prompt template lacks placeholder(s) {', '.join('{' + n + '}' for n in missing)}: "
            f"{template!r}"
        )
