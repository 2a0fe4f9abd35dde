"""Malformed rows: the DataError names the file and the 1-based data row; skip mode counts them."""

from __future__ import annotations

import json
import re

import pytest

from securefed.data import DataConfig, load_examples
from securefed.errors import DataError

GOOD = {"instruction": "Say hi.", "output": "Hi"}


def _jsonl(tmp_path, rows, name="d.jsonl"):
    path = tmp_path / name
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def _cfg(path, **kw):
    return DataConfig(source=str(path), preset=kw.pop("preset", "alpaca"), eval_fraction=0.0, **kw)


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({"instruction": "x"}, "missing field 'output'"),
        ({"instruction": "x", "output": "   "}, "empty field 'output'"),
        ({"instruction": "x", "output": 7}, "field 'output' must be text, got int"),
        ({"instruction": None, "output": "y"}, "missing field 'instruction'"),
        ("{not json", "invalid JSON"),
        ([1, 2], "row must be an object"),
    ],
)
def test_jsonl_error_names_file_and_row(tmp_path, bad, reason):
    path = _jsonl(tmp_path, [GOOD, GOOD, bad, GOOD])
    with pytest.raises(DataError) as err:
        load_examples(_cfg(path), seed=0)
    assert str(err.value).startswith(f"{path} row 3: ")
    assert reason in str(err.value)


def test_csv_row_numbers_exclude_header(tmp_path):
    path = tmp_path / "file.csv"
    rows = ["instruction,output"] + [f"q{i},a{i}" for i in range(1, 17)] + ["q17,", "q18,a18"]
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=re.escape(f"{path} row 17: empty field 'output'")):
        load_examples(_cfg(path), seed=0)


def test_csv_wrong_field_count(tmp_path):
    path = tmp_path / "file.csv"
    path.write_text('instruction,output\nq1,a1\n"q2, quoted",a2,extra\n')
    with pytest.raises(DataError, match=re.escape(f"{path} row 2: has 3 fields, the header has 2")):
        load_examples(_cfg(path), seed=0)


def test_unknown_label(tmp_path):
    path = tmp_path / "fpb.csv"
    path.write_text("Sentiment,Headline\npositive,up\nbullish,moon\n")
    with pytest.raises(DataError, match=r"row 2: unknown label 'bullish' in field 'Sentiment' "
                                        r"\(known: negative, neutral, positive\)"):
        load_examples(_cfg(path, preset="financial-phrasebank"), seed=0)


def test_chat_rows(tmp_path):
    no_reply = {"messages": [{"role": "user", "content": "hi"}]}
    bad_role = {"messages": [{"role": "human", "content": "hi"}, {"role": "assistant", "content": "x"}]}
    path = _jsonl(tmp_path, [no_reply])
    with pytest.raises(DataError, match="row 1: field 'messages' has no assistant turn"):
        load_examples(_cfg(path, preset="chat"), seed=0)
    path = _jsonl(tmp_path, [bad_role])
    with pytest.raises(DataError, match="row 1: message 1 of 'messages' has role 'human'"):
        load_examples(_cfg(path, preset="chat"), seed=0)


def test_skip_mode_counts(tmp_path):
    rows = [GOOD, {"instruction": "x"}, "{oops", GOOD, {"instruction": "x", "output": ""}]
    data = load_examples(_cfg(_jsonl(tmp_path, rows), skip_malformed=True), seed=0)
    assert data.skipped == 3 and len(data.train) == 2


def test_all_rows_bad_is_an_error_even_when_skipping(tmp_path):
    path = _jsonl(tmp_path, [{"instruction": "x", "output": "  "}])  # the column exists; its only row is bad
    with pytest.raises(DataError, match=r"no usable rows \(1 malformed rows skipped\)"):
        load_examples(_cfg(path, skip_malformed=True), seed=0)


def test_bad_json_document(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('{"rows": []}')
    with pytest.raises(DataError, match="expected a JSON list"):
        load_examples(_cfg(path), seed=0)
    path.write_text("[{")
    with pytest.raises(DataError, match=re.escape(f"{path}: invalid JSON at line 1")):
        load_examples(_cfg(path), seed=0)


def test_missing_partition_column(tmp_path):
    path = _jsonl(tmp_path, [dict(GOOD, topic="a"), GOOD])
    cfg = _cfg(path, partition={"method": "natural", "column": "topic"})
    with pytest.raises(DataError, match="row 2: missing partition column 'topic'"):
        load_examples(cfg, seed=0)


@pytest.mark.parametrize("rows, overrides, role, column", [
    ("text,sentiment\ngood,positive\nbad,negative\n", {"preset": "classification"}, "label", "label"),
    ("Sentiment,Headline\npositive,up\nnegative,down\n",
     {"preset": "financial-phrasebank", "fields": {"text": "headline"}}, "text", "headline"),
])
def test_a_column_no_row_has_names_the_setting_and_lists_the_columns(tmp_path, rows, overrides, role, column):
    """Not "needs 2 distinct labels" nor "set skip_malformed" (which would skip every row)."""
    from securefed.errors import ConfigError

    path = tmp_path / "d.csv"
    path.write_text(rows)
    with pytest.raises(ConfigError) as err:
        load_examples(DataConfig(source=str(path), eval_fraction=0.0, **overrides), seed=0)
    msg = str(err.value)
    header = rows.splitlines()[0].replace(",", ", ")
    assert f"data.fields.{role}: no column {column!r}" in msg and f"its columns: {header}" in msg
    assert "skip_malformed" not in msg
