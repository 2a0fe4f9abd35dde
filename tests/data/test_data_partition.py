"""Partitioning: coverage, determinism, Dirichlet skew vs alpha, natural split, reports."""

from __future__ import annotations

import json

import numpy as np
import pytest

from securefed.data import DataConfig, PartitionConfig, load_examples, partition, partition_report
from securefed.data.partition import label_entropy
from securefed.errors import ConfigError, DataError

LABELS = [c for c in "abcd" for _ in range(250)]  # 1000 examples, 4 balanced classes


def _check_cover(parts, n, k):
    assert len(parts) == k and all(parts)
    flat = [i for p in parts for i in p]
    assert sorted(flat) == list(range(n))  # disjoint and union = all


@pytest.mark.parametrize("method", ["iid", "dirichlet"])
def test_coverage_and_determinism(method):
    cfg = PartitionConfig(method=method, alpha=0.3)
    a = partition(len(LABELS), LABELS, 7, cfg, seed=11)
    _check_cover(a, len(LABELS), 7)
    assert a == partition(len(LABELS), LABELS, 7, cfg, seed=11)
    assert a != partition(len(LABELS), LABELS, 7, cfg, seed=12)


def test_iid_sizes_even_and_labels_optional():
    parts = partition(10, None, 3, PartitionConfig(), seed=0)
    _check_cover(parts, 10, 3)
    assert sorted(len(p) for p in parts) == [3, 3, 4]


def _mean_entropy(alpha, seeds=range(5)):
    values = []
    for seed in seeds:
        cfg = PartitionConfig(method="dirichlet", alpha=alpha)
        parts = partition(len(LABELS), LABELS, 10, cfg, seed)
        values.append(partition_report(parts, LABELS).mean_entropy_bits)
    return float(np.mean(values))


def test_dirichlet_skew_decreases_with_alpha():
    low, mid, high = (_mean_entropy(a) for a in (0.05, 1.0, 100.0))
    assert low < mid < high
    assert high > 1.9  # near the 2 bits of 4 balanced classes
    assert low < 1.0  # most parties dominated by one or two classes


def test_dirichlet_every_party_nonempty_when_tight():
    labels = ["x"] * 6 + ["y"] * 6
    for seed in range(20):
        parts = partition(12, labels, 12, PartitionConfig(method="dirichlet", alpha=0.01), seed)
        _check_cover(parts, 12, 12)


def test_dirichlet_needs_labels():
    with pytest.raises(ConfigError, match="set data.partition.column"):
        partition(3, ["a", None, "b"], 2, PartitionConfig(method="dirichlet"), 0)


def test_natural_one_value_per_party_and_grouping():
    keys = ["u"] * 5 + ["v"] * 2 + ["w"] * 3
    parts = partition(10, keys, 3, PartitionConfig(method="natural"), seed=0)
    assert parts == [[0, 1, 2, 3, 4], [5, 6], [7, 8, 9]]  # sorted key order
    grouped = partition(10, keys, 2, PartitionConfig(method="natural"), seed=0)
    # Largest group (u: 5) to party 0, then w (3) to the smaller party 1, then v (2) to party 1.
    assert grouped == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    with pytest.raises(ConfigError, match="3 distinct values .* but 4 parties"):
        partition(10, keys, 4, PartitionConfig(method="natural"), seed=0)


def test_natural_by_column_of_loaded_data(tmp_path):
    path = tmp_path / "d.jsonl"
    rows = [{"instruction": f"q{i}", "output": "a", "site": f"s{i % 3}"} for i in range(9)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    cfg = DataConfig(source=str(path), eval_fraction=0.0,
                     partition={"method": "natural", "column": "site"})
    data = load_examples(cfg, seed=0)
    assert data.partition_keys == tuple(f"s{i % 3}" for i in range(9))
    assert data.train[4].label == "s1"  # instruction data: the category is the label
    parts = partition(len(data.train), data.partition_keys, 3, cfg.partition, seed=0)
    assert parts == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]


def test_impossible_requests():
    with pytest.raises(DataError, match="at least one example"):
        partition(3, None, 4, PartitionConfig(), 0)
    with pytest.raises(ConfigError, match="positive integer"):
        partition(3, None, 0, PartitionConfig(), 0)


def test_report():
    parts = [[0, 1, 2], [3]]
    labels = ["a", "a", "b", "b"]
    report = partition_report(parts, labels)
    header, rows = report.table()
    assert header == ["party", "size", "a", "b", "entropy (bits)"]
    assert rows == [[0, 3, 2, 1, round(label_entropy([2, 1]), 3)], [1, 1, 0, 1, 0.0]]
    doc = report.to_dict()
    assert json.loads(json.dumps(doc)) == doc and doc["total"] == 4
    assert partition_report(parts).labels == ()
    assert label_entropy([5, 5]) == pytest.approx(1.0)
