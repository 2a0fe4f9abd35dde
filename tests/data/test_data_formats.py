"""Each file format loads the same rows; `format="auto"` picks the right reader; the hub path is
exercised with a stand-in for `datasets.load_dataset` (never the network)."""

from __future__ import annotations

import csv
import json

import pytest

from securefed.data import DataConfig, load_examples
from securefed.data.readers import resolve_format
from securefed.errors import ConfigError, DataError

ROWS = [
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
    {"instruction": "Name a colour.", "input": "", "output": "Blue"},
    {"instruction": "Say hi.", "input": "", "output": "Hi"},
]


def _cfg(source, **kw) -> DataConfig:
    return DataConfig(source=str(source), eval_fraction=0.0, **kw)


def _responses(data) -> list[str]:
    return [ex.response for ex in data.train]


def _write_csv(path, rows) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_json_list(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(ROWS))
    data = load_examples(_cfg(path), seed=0)
    assert _responses(data) == ["5", "Blue", "Hi"]
    assert data.task == "instruction" and data.labels is None and data.skipped == 0


def test_json_object_with_data_list(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"data": ROWS, "version": 1}))
    assert _responses(load_examples(_cfg(path), seed=0)) == ["5", "Blue", "Hi"]


def test_jsonl_skips_blank_lines(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in ROWS[:2]) + "\n\n" + json.dumps(ROWS[2]) + "\n")
    assert _responses(load_examples(_cfg(path), seed=0)) == ["5", "Blue", "Hi"]


def test_csv(tmp_path):
    path = tmp_path / "d.csv"
    _write_csv(path, ROWS)
    data = load_examples(_cfg(path), seed=0)
    assert _responses(data) == ["5", "Blue", "Hi"]
    assert "### Input:\n2 and 3" in data.train[0].prompt
    assert "### Input" not in data.train[1].prompt


def test_csv_misencoded_bytes_are_replaced(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"text,label\nS\xe4\xe4st\xf6pankki up,pos\nflat day,neu\n")
    data = load_examples(_cfg(path, preset="classification"), seed=0)
    assert "\ufffd" in data.train[0].prompt
    assert data.labels == ("neu", "pos")


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), path)
    assert _responses(load_examples(_cfg(path), seed=0)) == ["5", "Blue", "Hi"]


def test_load_from_disk_dataset_and_dict(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list(ROWS)
    ds.save_to_disk(str(tmp_path / "plain"))
    assert _responses(load_examples(_cfg(tmp_path / "plain"), seed=0)) == ["5", "Blue", "Hi"]
    datasets.DatasetDict({"train": ds, "test": ds.select([0])}).save_to_disk(str(tmp_path / "dd"))
    test = load_examples(_cfg(tmp_path / "dd", split="test"), seed=0)
    assert _responses(test) == ["5"]
    with pytest.raises(DataError, match="no split 'dev'.*test, train"):
        load_examples(_cfg(tmp_path / "dd", split="dev"), seed=0)


def test_hub_path_uses_load_dataset(monkeypatch):
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load_dataset(hub_id, split):
        calls.append((hub_id, split))
        return datasets.Dataset.from_list(ROWS)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    data = load_examples(_cfg("someone/some-set"), seed=0)
    assert _responses(data) == ["5", "Blue", "Hi"]
    # A named preset with source "default" loads the preset's own hub id.
    load_examples(DataConfig(preset="mathinstruct", fields={"input": "input"}), seed=0)
    assert calls == [("someone/some-set", "train"), ("TIGER-Lab/MathInstruct", "train")]


def test_hub_failure_is_a_data_error(monkeypatch):
    datasets = pytest.importorskip("datasets")

    def failing(hub_id, split):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", failing)
    with pytest.raises(DataError, match="cannot load hub data set 'nobody/nothing'.*offline"):
        load_examples(_cfg("nobody/nothing"), seed=0)


def test_resolve_format(tmp_path):
    (tmp_path / "a.jsonl").write_text("{}\n")
    (tmp_path / "a.txt").write_text("x")
    assert resolve_format(str(tmp_path / "a.jsonl"), "auto") == "jsonl"
    assert resolve_format(str(tmp_path), "auto") == "disk"
    assert resolve_format("tatsu-lab/alpaca", "auto") == "hub"
    assert resolve_format(str(tmp_path / "a.txt"), "jsonl") == "jsonl"
    with pytest.raises(ConfigError, match="a.txt"):
        resolve_format(str(tmp_path / "a.txt"), "auto")


@pytest.mark.parametrize("name", ["missing.csv", "sub/missing.jsonl", "./nothing"])
def test_missing_file_names_the_path(tmp_path, name):
    path = str(tmp_path / name) if name != "./nothing" else name
    with pytest.raises(DataError, match="not found: " + path.replace(".", r"\.")):
        load_examples(_cfg(path), seed=0)


def test_split_and_max_examples_are_seeded(tmp_path):
    path = tmp_path / "d.jsonl"
    rows = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(50)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    cfg = DataConfig(source=str(path), eval_fraction=0.2, eval_max=6, max_examples=30)
    a, b, c = (load_examples(cfg, seed=s) for s in (1, 1, 2))
    assert a == b and a != c
    assert len(a.eval) == 6 and len(a.train) == 24
    assert not {e.response for e in a.train} & {e.response for e in a.eval}
    with pytest.raises(DataError, match="none for training"):
        load_examples(DataConfig(source=str(path), max_examples=1, eval_fraction=0.9), seed=0)
