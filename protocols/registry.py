"""Protocols by name: `register` a factory, `create` one from its config section."""

from __future__ import annotations

from typing import Any, Callable

from securefed.protocols.base import AggregationProtocol

_FACTORIES: dict[str, Callable[[Any], AggregationProtocol]] = {}


def register(name: str, factory: Callable[[Any], AggregationProtocol]) -> None:
    if name in _FACTORIES:
        raise ValueError(f"protocol {name!r} is already registered")
    _FACTORIES[name] = factory


def names() -> tuple[str, ...]:
    _load_builtins()
    return tuple(sorted(_FACTORIES))


def create(name: str, config: Any = None) -> AggregationProtocol:
    _load_builtins()
    if name not in _FACTORIES:
        raise KeyError(f"unknown protocol {name!r}; known: {', '.join(sorted(_FACTORIES))}")
    return _FACTORIES[name](config)


def _load_builtins() -> None:
    # Imported lazily (each built-in module calls register() once, at import time), so importing the
    # registry does not pull in TenSEAL or the masking code until a protocol is asked for.
    import securefed.protocols.he  # noqa: F401
    import securefed.protocols.plain  # noqa: F401
    import securefed.protocols.secagg  # noqa: F401
