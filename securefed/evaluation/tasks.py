"""Evaluation tasks by name. `create(name)` returns a task; `register` adds one.

A task is any object with a `name`, `run(model, tokenizer, rows, **options) -> dict` returning
metrics (always including "n", the number of rows scored) and `summary(metrics) -> str`, a one-line
markdown summary. Built-ins live in `generative_tasks` and `likelihood_tasks`.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Protocol, Sequence

from securefed.errors import UserError
from securefed.evaluation.generative_tasks import (
    ClassificationTask,
    CodeTask,
    HarmlessnessTask,
    MathTask,
)
from securefed.evaluation.likelihood_tasks import MultipleChoiceTask, PerplexityTask, PreferenceTask
from securefed.evaluation.rows import load_rows

__all__ = ["Task", "available", "create", "load_rows", "register"]


class Task(Protocol):
    name: str

    def run(
        self, model: Any, tokenizer: Any, rows: Sequence[dict[str, Any]], **options: Any
    ) -> dict[str, Any]: ...

    def summary(self, metrics: Mapping[str, Any]) -> str: ...


Factory = Callable[[], Task]
_FACTORIES: dict[str, Factory] = {}


def register(name: str, factory: Factory) -> None:
    if name in _FACTORIES:
        raise ValueError(f"evaluation task {name!r} is already registered")
    _FACTORIES[name] = factory


def available() -> tuple[str, ...]:
    return tuple(sorted(_FACTORIES))


def create(name: str) -> Task:
    if name not in _FACTORIES:
        raise UserError(f"unknown evaluation task {name!r}; known: {', '.join(available())}")
    return _FACTORIES[name]()


register("classification", ClassificationTask)
register("multiple_choice", MultipleChoiceTask)
register("math", MathTask)
register("code", CodeTask)
register("harmlessness", HarmlessnessTask)
register("preference", PreferenceTask)
register("perplexity", PerplexityTask)
