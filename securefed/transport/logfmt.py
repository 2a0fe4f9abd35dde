"""Structured log lines: `event=name key=value ...`, values quoted only when they need it.

Only metadata goes through here (ids, sizes, counts, durations): callers never pass payloads."""

from __future__ import annotations

from typing import Any


def _fmt(v: Any) -> str:
    s = str(v)
    if not s or any(c.isspace() or c in '"=' for c in s):
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return s


def kv(event: str, **fields: Any) -> str:
    return " ".join([f"event={_fmt(event)}"] + [f"{k}={_fmt(v)}" for k, v in fields.items()])
