"""Load a configured data set: read rows, apply the preset, handle malformed rows, split off eval.

Splitting and sampling use a numpy Generator seeded by the run seed: reproducible experiment
randomness, not security randomness.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from securefed.data.config import DataConfig
from securefed.data.convert import Malformed, RowConverter
from securefed.data.default import default_rows
from securefed.data.presets import PREFERENCE_KINDS, TEMPLATE_FIELDS, Preset, get_preset, infer_preset
from securefed.data.readers import RawRows, read_rows, resolve_format
from securefed.data.templates import check_template, fill
from securefed.data.types import LoadedData, LoadedPreferences, PreferenceExample
from securefed.errors import ConfigError, DataError

T = TypeVar("T")
log = logging.getLogger(__name__)
_SHOWN_SKIPS = 5  # row numbers named in the skip warning
DEFAULT_ORIGIN = "default data"


@dataclass(frozen=True)
class _Prepared:
    raw: RawRows
    preset_name: str
    converter: RowConverter


def load_examples(cfg: DataConfig, seed: int) -> LoadedData:
    """SFT examples of the configured source, split into train and eval.

    Malformed rows raise DataError "<file> row <n>: <reason>", or are counted in `skipped` when
    `cfg.skip_malformed`. `max_examples` draws a seeded random subset of all valid rows before the
    eval split, so a cap does not bias towards the head of a sorted file.
    """
    prepared = _prepare(cfg)
    preset = prepared.converter.preset
    if preset.kind in PREFERENCE_KINDS:
        raise ConfigError(
            f"data.preset: {prepared.preset_name!r} holds preference pairs for DPO; "
            f"it is read by load_preferences, not as SFT examples"
        )
    pairs, skipped = _convert_all(prepared.raw, prepared.converter.example, cfg.skip_malformed)
    train_idx, eval_idx, test_idx = _split(len(pairs), cfg, seed, prepared.raw.origin)
    is_labelled = preset.kind == "classification"
    return LoadedData(
        train=tuple(pairs[i][0] for i in train_idx),
        eval=tuple(pairs[i][0] for i in eval_idx),
        labels=prepared.converter.labels if is_labelled else None,
        skipped=skipped,
        task="classification" if is_labelled else "instruction",
        partition_keys=tuple(pairs[i][1] for i in train_idx),
        test=tuple(pairs[i][0] for i in test_idx),
    )


def load_preferences(cfg: DataConfig, seed: int) -> LoadedPreferences:
    """DPO pairs of the configured source, split into train and eval.

    Preference presets (ultrafeedback, hh-rlhf) read their pairs. A labelled preset (the embedded
    default, financial-phrasebank, ...) yields pairs too: chosen = the true label's response,
    rejected = a wrong label's response drawn with the run seed.
    """
    prepared = _prepare(cfg)
    converter = prepared.converter
    kind = converter.preset.kind
    if kind in PREFERENCE_KINDS:
        convert: Callable[[Any], PreferenceExample] = converter.preference
    elif kind == "classification":
        wrong_rng = np.random.default_rng([seed, 1])  # its own stream: independent of the split
        convert = _label_pairs(converter, wrong_rng)
    else:
        raise ConfigError(
            f"data.preset: {prepared.preset_name!r} has no preference pairs; use ultrafeedback, "
            f"hh-rlhf or a labelled preset"
        )
    pairs, skipped = _convert_all(prepared.raw, convert, cfg.skip_malformed)
    train_idx, eval_idx, test_idx = _split(len(pairs), cfg, seed, prepared.raw.origin)
    return LoadedPreferences(
        train=tuple(pairs[i] for i in train_idx),
        eval=tuple(pairs[i] for i in eval_idx),
        skipped=skipped,
        test=tuple(pairs[i] for i in test_idx),
    )


# --- steps ----------------------------------------------------------------------------------------


def _prepare(cfg: DataConfig) -> _Prepared:
    """Resolve source, preset, split, field mapping, template and labels; read the raw rows."""
    if cfg.source == "default" and cfg.format == "auto":
        name = cfg.preset or "default"
        preset = get_preset(name)
        if name == "default":
            raw = RawRows(origin=DEFAULT_ORIGIN, rows=tuple(enumerate(default_rows(), start=1)))
        elif preset.hub_id is None:
            raise ConfigError(
                f"data.source: preset {name!r} has no default location; set data.source to its file"
            )
        else:
            split = cfg.split or preset.hub_split or "train"
            raw = read_rows(preset.hub_id, "hub", split, cfg.encoding)
    else:
        fmt = resolve_format(cfg.source, cfg.format)
        preset_hint = get_preset(cfg.preset) if cfg.preset is not None else None
        split = cfg.split or (preset_hint.hub_split if preset_hint else None) or "train"
        raw = read_rows(cfg.source, fmt, split, cfg.encoding)
        name = cfg.preset or infer_preset(_first_columns(raw), raw.origin)
        preset = get_preset(name)

    columns = preset.role_columns(cfg.fields)
    if cfg.template is not None:
        if preset.kind not in TEMPLATE_FIELDS:
            raise ConfigError(f"data.template: preset {name!r} ({preset.kind} data) takes no template")
        check_template(cfg.template, TEMPLATE_FIELDS[preset.kind])
    labels = _labels(cfg, preset, name, columns, raw)
    partition_column = cfg.partition.column
    converter = RowConverter(preset, columns, cfg.template, labels, partition_column)
    return _Prepared(raw=raw, preset_name=name, converter=converter)


def _first_columns(raw: RawRows) -> list[str]:
    for _, row in raw.rows:
        if isinstance(row, Mapping):
            return [str(k) for k in row]
    raise DataError(f"{raw.origin}: no readable rows")


def _labels(
    cfg: DataConfig, preset: Preset, name: str, columns: Mapping[str, str], raw: RawRows
) -> tuple[str, ...] | None:
    if preset.kind != "classification":
        if cfg.labels is not None:
            raise ConfigError(f"data.labels: preset {name!r} is not a labelled task")
        return None
    if cfg.labels is not None:
        return tuple(label.strip() for label in cfg.labels)
    if preset.labels is not None:
        return preset.labels
    # No label list anywhere: the distinct label strings of the data, sorted for a stable order.
    column = columns["label"]
    found: dict[str, str] = {}
    for _, row in raw.rows:
        value = row.get(column) if isinstance(row, Mapping) else None
        if isinstance(value, str) and value.strip():
            found.setdefault(value.strip().casefold(), value.strip())
        elif value is not None and not isinstance(value, str):
            raise ConfigError(
                f"data.labels: {raw.origin} has non-text labels in {column!r}; name the classes "
                f"in data.labels (an integer label is read as an index into that list)"
            )
    if len(found) < 2:
        raise DataError(f"{raw.origin}: a labelled task needs at least 2 distinct labels in {column!r}")
    return tuple(sorted(found.values()))


def _convert_all(raw: RawRows, convert: Callable[[Any], T], skip: bool) -> tuple[list[T], int]:
    items: list[T] = []
    skipped: list[int] = []
    for number, row in raw.rows:
        try:
            items.append(convert(row))
        except Malformed as problem:
            if not skip:
                raise DataError(f"{raw.origin} row {number}: {problem} "
                                f"(set data.skip_malformed = true to skip such rows)") from None
            skipped.append(number)
    if not items:
        note = f" ({len(skipped)} malformed rows skipped)" if skipped else ""
        raise DataError(f"{raw.origin}: no usable rows{note}")
    if skipped:
        # Said where people look (the run's console and run.log), not only in summary.json.
        shown = ", ".join(map(str, skipped[:_SHOWN_SKIPS])) + (", ..." if len(skipped) > _SHOWN_SKIPS else "")
        log.warning("%s: skipped %d malformed row(s) of %d (data.skip_malformed): rows %s",
                    raw.origin, len(skipped), len(raw.rows), shown)
    return items, len(skipped)


def heldout_test_indices(n: int, test_fraction: float, seed: int) -> list[int]:
    """The TEST rows among n valid rows: a function of (n, test_fraction, seed) only, so every run,
    party and `securefed eval` with that seed agrees on them whatever else (max_examples, eval share,
    partition) differs. Its own random stream keeps the other splits unchanged when it is off."""
    n_test = int(round(test_fraction * n))
    return sorted(int(i) for i in np.random.default_rng([seed, 0x7E57]).permutation(n)[:n_test])


def _split(n: int, cfg: DataConfig, seed: int, origin: str) -> tuple[list[int], list[int], list[int]]:
    """(train, eval, test) indices, each in source order. TEST is carved from all rows first; the
    optional `max_examples` cap and the eval share then apply to the rest, so no row is in two."""
    rng = np.random.default_rng(seed)
    test_idx = heldout_test_indices(n, cfg.test_fraction, seed)
    pool = np.setdiff1d(np.arange(n), test_idx) if test_idx else np.arange(n)
    if cfg.max_examples is not None and len(pool) > cfg.max_examples:
        pool = np.sort(pool[rng.choice(len(pool), size=cfg.max_examples, replace=False)])
    n_eval = min(int(round(cfg.eval_fraction * len(pool))), cfg.eval_max)
    if len(pool) - n_eval < 1:
        raise DataError(f"{origin}: {len(pool)} examples leave none for training after the eval split")
    order = rng.permutation(len(pool))
    eval_idx = sorted(int(pool[i]) for i in order[:n_eval])
    train_idx = sorted(int(pool[i]) for i in order[n_eval:])
    return train_idx, eval_idx, test_idx


def _label_pairs(
    converter: RowConverter, rng: np.random.Generator
) -> Callable[[Any], PreferenceExample]:
    labels: Sequence[str] = converter.labels or ()

    def convert(row: Any) -> PreferenceExample:
        example, _ = converter.example(row)
        wrong = [label for label in labels if label != example.label]
        rejected = wrong[int(rng.integers(len(wrong)))]
        return PreferenceExample(
            prompt=example.prompt,
            chosen=example.response,
            rejected=fill(converter.preset.response_template, {"label": rejected}),
        )

    return convert


def default_corpus() -> list[str]:
    """All texts of the default data (prompts and responses of every row, and the preference
    pairs), for building a tokenizer that covers them (models.tiny). Independent of the run seed."""
    cfg = DataConfig(source="default", eval_fraction=0.0)
    data = load_examples(cfg, seed=0)
    prefs = load_preferences(cfg, seed=0)
    texts = [t for ex in data.train + data.eval for t in (ex.prompt, ex.response)]
    texts += [t for p in prefs.train + prefs.eval for t in (p.prompt, p.chosen, p.rejected)]
    return texts
