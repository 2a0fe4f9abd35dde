"""Typed config of the data layer; the root config nests `DataConfig` under the key `data`."""

from __future__ import annotations

import codecs
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from securefed.data.presets import get_preset
from securefed.errors import ConfigError

DataFormat = Literal["auto", "json", "jsonl", "csv", "parquet", "disk", "hub"]


class PartitionConfig(BaseModel):
    """How the train examples are split across parties.

    - `iid`: shuffle, then split into near-equal parts.
    - `dirichlet`: per class, proportions across parties drawn from Dir(alpha); small alpha = skewed.
    - `natural`: one party per distinct value of the key column (values are grouped onto parties when
      there are more values than parties; fewer values than parties is an error).
    `column` names a raw data column to use as key; None uses the example's label.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["iid", "dirichlet", "natural"] = "iid"
    alpha: float = Field(default=0.5, gt=0)
    column: str | None = None


class DataConfig(BaseModel):
    """Where the data comes from and how rows become examples.

    `source`: "default" (the embedded task), a local file or directory, or a hub id.
    `preset`: a registered preset name; None infers one from the columns ("default" for the embedded
    source; with source "default" a named preset loads that preset's hub id).
    `split`: the split of a hub or on-disk DatasetDict; None = the preset's own (else "train").
    `fields`: role -> column overrides of the preset mapping, e.g. {"instruction": "question"}.
    `max_examples`: cap on train+eval rows, drawn at random (seeded) from all valid rows.
    `eval_fraction`/`eval_max`: the held-out share, capped at `eval_max` examples.
    `test_fraction`: a held-out TEST share of all valid rows, fixed by the seed alone (before the
    `max_examples` cap); no party ever trains on it, and evaluation defaults to it when it is > 0.
    `prompt_style`: "auto" renders rows with the tokenizer's chat template when it has one, else the
    preset's text template; "chat" requires a chat template; "template" always uses the preset's.
    `encoding`: text encoding of CSV/JSON files; undecodable bytes are replaced, never fatal.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = "default"
    preset: str | None = None
    format: DataFormat = "auto"
    split: str | None = None
    fields: dict[str, str] = Field(default_factory=dict)
    template: str | None = None
    labels: list[str] | None = None
    max_examples: int | None = Field(default=None, ge=1)
    eval_fraction: float = Field(default=0.1, ge=0, lt=1)
    eval_max: int = Field(default=200, ge=0)
    test_fraction: float = Field(default=0.0, ge=0, le=0.5)
    prompt_style: Literal["auto", "chat", "template"] = "auto"
    skip_malformed: bool = False
    encoding: str = "utf-8"
    partition: PartitionConfig = Field(default_factory=PartitionConfig)

    @field_validator("source")
    @classmethod
    def _source_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("source must not be empty (use 'default' for the embedded data)")
        return value

    @field_validator("preset")
    @classmethod
    def _preset_known(cls, value: str | None) -> str | None:
        # pydantic reports ValueError with the field path; ConfigError would escape unformatted.
        if value is not None:
            try:
                get_preset(value)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("encoding")
    @classmethod
    def _encoding_known(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown text encoding {value!r}") from None
        return value

    @field_validator("labels")
    @classmethod
    def _labels_distinct(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if len(value) < 2:
                raise ValueError("a labelled task needs at least 2 labels")
            if len({v.strip().casefold() for v in value}) != len(value):
                raise ValueError("labels must be distinct (compared case-insensitively)")
            if any(not v.strip() for v in value):
                raise ValueError("labels must not be empty")
        return value
