"""Friendlier config errors: an unknown key names the closest valid one and the keys it could be.

pydantic reports `trainin: Extra inputs are not permitted`; a person wants "did you mean training?"
and the list to pick from. The valid keys come from the models themselves, so they never go stale.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any, Sequence

from pydantic import BaseModel


def _submodel(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel class inside an annotation (`Model`, `Model | None`), or None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _submodel(arg)
            if found is not None:
                return found
    return None


def _section(root: type[BaseModel], path: Sequence[str]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = root
    for name in path:
        field = model.model_fields.get(name) if model is not None else None
        model = _submodel(field.annotation) if field is not None else None
        if model is None:
            return None
    return model


def unknown_key_message(root: type[BaseModel], loc: Sequence[Any]) -> str | None:
    """"<dotted>: unknown key; did you mean <dotted'>? (valid keys of <section>: ...)" for an
    extra-forbidden error at `loc`, or None when `loc` is not inside a known section."""
    parts = [str(p) for p in loc]
    if not parts:
        return None
    section = _section(root, parts[:-1])
    if section is None:
        return None
    valid = sorted(section.model_fields)
    prefix = ".".join(parts[:-1])
    dotted = lambda key: f"{prefix}.{key}" if prefix else key  # noqa: E731
    close = difflib.get_close_matches(parts[-1], valid, n=1, cutoff=0.6)
    hint = f"; did you mean {dotted(close[0])}?" if close else ""
    where = f"of {prefix}" if prefix else "at the top level"
    return f"{dotted(parts[-1])}: unknown key{hint} (valid keys {where}: {', '.join(valid)})"
