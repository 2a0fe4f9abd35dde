"""Rough edges a new user hit on real files: the column of a broken JSONL line, gzipped JSONL read
in place, and the raw HH-RLHF file (the skip_malformed hint, the skipped rows said out loud)."""

from __future__ import annotations

import gzip
import json
import logging
import os
from pathlib import Path

import pytest

from securefed.data import DataConfig, load_examples
from securefed.data.loading import load_preferences
from securefed.errors import DataError

REPO = Path(__file__).resolve().parents[2]
HH = Path(os.environ.get("SECUREFED_SHARED_DATA", REPO.parent / "shared" / "data")) / "hh-rlhf" / \
    "harmless-base-test.jsonl.gz"
GOOD = {"instruction": "Give three tips for staying healthy.", "output": "Eat well, sleep, move."}


def _cfg(path, **kw):
    return DataConfig(source=str(path), preset=kw.pop("preset", "alpaca"), eval_fraction=0.0, **kw)


@pytest.mark.parametrize("ending", ["\n", "\r\n"])
def test_broken_jsonl_line_reports_the_column_of_the_fault(tmp_path, ending):
    cut = '{"instruction": "Give three tips for staying healthy.", "output": "Eat well", '  # truncated
    path = tmp_path / "d.jsonl"
    path.write_bytes((json.dumps(GOOD) + ending + cut + ending + json.dumps(GOOD) + ending).encode())
    with pytest.raises(DataError) as err:
        load_examples(_cfg(path), seed=0)
    # The fault is just past the end of the line (a property name was expected there), not "column 1".
    assert f"row 2: invalid JSON: Expecting property name enclosed in double quotes (column {len(cut) + 1})" \
        in str(err.value)


def test_gzipped_jsonl_is_read_in_place(tmp_path):
    path = tmp_path / "d.jsonl.gz"
    path.write_bytes(gzip.compress(("\n".join(json.dumps(GOOD) for _ in range(3)) + "\n").encode()))
    assert len(load_examples(_cfg(path), seed=0).train) == 3
    (tmp_path / "bad.jsonl.gz").write_bytes(gzip.compress(b"x" * 100)[:20])  # truncated archive
    with pytest.raises(DataError, match="not a readable gzip file"):
        load_examples(_cfg(tmp_path / "bad.jsonl.gz"), seed=0)


def test_malformed_row_error_names_the_skip_option(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps({"instruction": "x"}) + "\n")
    with pytest.raises(DataError, match=r"row 2: missing field 'output' \(set data.skip_malformed = true"):
        load_examples(_cfg(path), seed=0)


@pytest.mark.skipif(not HH.is_file(), reason=f"{HH} not present")
def test_raw_hh_rlhf_file(caplog):
    cfg = DataConfig(source=str(HH), preset="hh-rlhf", eval_fraction=0.1)
    with pytest.raises(DataError, match=r"row 87: empty final assistant reply .*data.skip_malformed = true"):
        load_preferences(cfg, seed=0)
    with caplog.at_level(logging.WARNING, logger="securefed"):
        data = load_preferences(cfg.model_copy(update={"skip_malformed": True}), seed=0)
    assert data.skipped == 8 and len(data.train) + len(data.eval) == 2312 - 8
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "skipped 8 malformed row(s) of 2312" in warning and "rows 87, " in warning
