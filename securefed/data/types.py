"""Value types the data layer hands to training and evaluation.

Templates are applied before these objects exist, so everything downstream (tokenization, loss masks,
evaluation) sees one shape whatever the source format was.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TaskKind = Literal["instruction", "classification"]


@dataclass(frozen=True)
class Example:
    """One SFT example with its template already applied.

    `prompt` is the conditioning text (no loss on its tokens); `response` is the target (loss only on
    its tokens). Responses carry no end marker: the tokenizer step appends EOS. `label` is the class
    label of a labelled task, or for instruction data the category named by `partition.column`
    (None when there is none).
    """

    prompt: str
    response: str
    label: str | None = None
    # The conversation before the reply as (role, content) turns, for rendering with a model's own chat
    # template (data.prompt_style); () when the row has no structured form (the prompt is then one user turn).
    turns: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class PreferenceExample:
    """One DPO pair: the same prompt with a preferred and a dispreferred response."""

    prompt: str
    chosen: str
    rejected: str
    turns: tuple[tuple[str, str], ...] = ()  # as Example.turns


@dataclass(frozen=True)
class LoadedData:
    """The result of `load_examples`.

    `labels` is the ordered class list for labelled tasks (None for instruction data).
    `partition_keys` holds one key per train example for Dirichlet/natural partitioning: the value of
    `partition.column` when that is set, else `Example.label`. `skipped` counts malformed rows dropped
    under `skip_malformed=True`.
    """

    train: tuple[Example, ...]
    eval: tuple[Example, ...]
    labels: tuple[str, ...] | None
    skipped: int
    task: TaskKind
    partition_keys: tuple[str | None, ...]
    test: tuple[Example, ...] = ()  # the held-out TEST split (data.test_fraction): never trained on
    inferred_preset: str | None = None  # the preset read from the file's columns (data.preset unset)


@dataclass(frozen=True)
class LoadedPreferences:
    """The result of `load_preferences`: DPO pairs split into train and eval."""

    train: tuple[PreferenceExample, ...]
    eval: tuple[PreferenceExample, ...]
    skipped: int
    test: tuple[PreferenceExample, ...] = ()  # held-out TEST pairs (data.test_fraction)
    inferred_preset: str | None = None  # the preset read from the file's columns (data.preset unset)
