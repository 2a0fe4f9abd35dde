"""Split example indices across parties: IID, Dirichlet label skew, or a natural column split.

All randomness comes from a numpy Generator seeded by the run seed, so a partition is reproducible;
it is experiment randomness, not security randomness. Every party always gets at least one example.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from securefed.data.config import PartitionConfig
from securefed.errors import ConfigError, DataError

# Dirichlet draws are retried this many times to give every party an example before falling back
# to the deterministic repair below (small alpha with many parties rarely succeeds by chance).
DIRICHLET_ATTEMPTS = 50
NO_LABEL = "(none)"


def partition(
    n_examples: int,
    labels: Sequence[str | None] | None,
    num_parties: int,
    cfg: PartitionConfig,
    seed: int,
) -> list[list[int]]:
    """Indices of the examples held by each party (each list sorted; disjoint; union = all).

    `labels` gives each example's key (class label or category, e.g. `LoadedData.partition_keys`);
    it may be None for `iid`. `natural` puts each distinct key on its own party when there are
    exactly `num_parties` keys; with more keys, whole key groups are dealt largest first to the
    currently smallest party (deterministic, independent of the seed); fewer keys is a ConfigError.
    """
    if isinstance(num_parties, bool) or not isinstance(num_parties, int) or num_parties < 1:
        raise ConfigError(f"the number of parties must be a positive integer, got {num_parties!r}")
    if n_examples < num_parties:
        raise DataError(
            f"cannot give {num_parties} parties at least one example each from {n_examples} examples"
        )
    if labels is not None and len(labels) != n_examples:
        raise ValueError(f"got {len(labels)} labels for {n_examples} examples")
    rng = np.random.default_rng(seed)
    if cfg.method == "iid":
        parts = [chunk.tolist() for chunk in np.array_split(rng.permutation(n_examples), num_parties)]
    elif cfg.method == "dirichlet":
        parts = _dirichlet(_keys(labels, cfg), num_parties, cfg.alpha, rng)
    elif cfg.method == "natural":
        parts = _natural(_keys(labels, cfg), num_parties, cfg.column)
    else:  # unreachable through the validated config
        raise ConfigError(f"data.partition.method: unknown method {cfg.method!r}")
    return [sorted(int(i) for i in part) for part in parts]


def _keys(labels: Sequence[str | None] | None, cfg: PartitionConfig) -> list[str]:
    where = f"column {cfg.column!r}" if cfg.column else "the example labels"
    if labels is None or any(label is None for label in labels):
        raise ConfigError(
            f"data.partition.method {cfg.method!r} needs a key for every example from {where}; "
            f"set data.partition.column to a category column, or use method 'iid'"
        )
    return [str(label) for label in labels]


def _dirichlet(
    keys: list[str], num_parties: int, alpha: float, rng: np.random.Generator
) -> list[list[int]]:
    by_class: dict[str, list[int]] = {}
    for index, key in enumerate(keys):
        by_class.setdefault(key, []).append(index)
    classes = sorted(by_class)
    parts: list[list[int]] = []
    for _ in range(DIRICHLET_ATTEMPTS):
        parts = [[] for _ in range(num_parties)]
        for cls in classes:
            members = rng.permutation(by_class[cls])
            shares = rng.dirichlet(np.full(num_parties, alpha))
            if not np.all(np.isfinite(shares)) or shares.sum() <= 0:
                # Tiny alpha can underflow to all-zero/NaN: that limit means "one party takes all".
                shares = np.eye(num_parties)[rng.integers(num_parties)]
            cuts = np.floor(np.cumsum(shares)[:-1] * len(members)).astype(int)
            for party, chunk in enumerate(np.split(members, cuts)):
                parts[party].extend(chunk.tolist())
        if min(len(part) for part in parts) >= 1:
            return parts
    return _repair(parts, rng)


def _repair(parts: list[list[int]], rng: np.random.Generator) -> list[list[int]]:
    """Give each empty party one example taken from the currently largest party."""
    parts = [list(part) for part in parts]
    for party in range(len(parts)):
        if not parts[party]:
            donor = max(range(len(parts)), key=lambda p: (len(parts[p]), -p))
            parts[party].append(parts[donor].pop(int(rng.integers(len(parts[donor])))))
    return parts


def _natural(keys: list[str], num_parties: int, column: str | None) -> list[list[int]]:
    groups: dict[str, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    where = f"column {column!r}" if column else "the labels"
    if len(groups) < num_parties:
        raise ConfigError(
            f"data.partition: natural split by {where} has {len(groups)} distinct values "
            f"({', '.join(sorted(groups)[:10])}) but {num_parties} parties were asked for"
        )
    if len(groups) == num_parties:
        return [groups[key] for key in sorted(groups)]
    parts: list[list[int]] = [[] for _ in range(num_parties)]
    for key in sorted(groups, key=lambda k: (-len(groups[k]), k)):
        smallest = min(range(num_parties), key=lambda p: (len(parts[p]), p))
        parts[smallest].extend(groups[key])
    return parts


# --- report ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PartyStats:
    party: int
    size: int
    histogram: Mapping[str, int]  # label -> count, in the report's label order
    entropy_bits: float  # Shannon entropy of the party's label distribution


@dataclass(frozen=True)
class PartitionReport:
    """Per-party sizes and label histograms; `table()` for printing, `to_dict()` for JSON."""

    labels: tuple[str, ...]
    parties: tuple[PartyStats, ...]
    total: int

    @property
    def mean_entropy_bits(self) -> float:
        return float(np.mean([p.entropy_bits for p in self.parties])) if self.parties else 0.0

    def table(self) -> tuple[list[str], list[list[Any]]]:
        header = ["party", "size", *self.labels, "entropy (bits)"]
        rows = [
            [p.party, p.size, *(p.histogram.get(label, 0) for label in self.labels),
             round(p.entropy_bits, 3)]
            for p in self.parties
        ]
        return header, rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "labels": list(self.labels),
            "mean_entropy_bits": self.mean_entropy_bits,
            "parties": [
                {"party": p.party, "size": p.size, "histogram": dict(p.histogram),
                 "entropy_bits": p.entropy_bits}
                for p in self.parties
            ],
        }


def partition_report(
    parts: Sequence[Sequence[int]], labels: Sequence[str | None] | None = None
) -> PartitionReport:
    """Summarize a partition. Without labels (or with no label at all) histograms are empty."""
    has_labels = labels is not None and any(label is not None for label in labels)
    names: list[str] = []
    if has_labels:
        names = sorted({NO_LABEL if label is None else str(label) for label in labels})
    stats = []
    for party, indices in enumerate(parts):
        histogram: dict[str, int] = {}
        if has_labels:
            counts = Counter(NO_LABEL if labels[i] is None else str(labels[i]) for i in indices)
            histogram = {name: counts[name] for name in names}
        stats.append(PartyStats(party, len(indices), histogram, label_entropy(histogram.values())))
    return PartitionReport(tuple(names), tuple(stats), sum(len(p) for p in parts))


def label_entropy(counts: Iterable[int]) -> float:
    """Shannon entropy in bits of a label count vector (0 for an empty or single-label party)."""
    values = [c for c in counts if c > 0]
    total = sum(values)
    if total == 0:
        return 0.0
    return sum(c / total * math.log2(total / c) for c in values)
