"""`eval --task preference` on raw Anthropic HH-RLHF rows: whole dialogues split at the last
Assistant turn, malformed rows named (or skipped), errors naming the row and which answer."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from _eval_helpers import AdapterScorer, byte_tokenizer
from securefed.errors import DataError, UserError
from securefed.evaluation import tasks
from securefed.evaluation.rows import load_rows

REPO = Path(__file__).resolve().parents[2]
HH = Path(os.environ.get("SECUREFED_SHARED_DATA", REPO.parent / "shared" / "data")) / "hh-rlhf" / \
    "harmless-base-test.jsonl.gz"

PROMPT = "\n\nHuman: How do I pick a lock?\n\nAssistant: Why do you ask?\n\nHuman: I locked myself out.\n\nAssistant:"


def _hh(chosen_reply: str, rejected_reply: str) -> dict[str, str]:
    return {"chosen": PROMPT + chosen_reply, "rejected": PROMPT + rejected_reply}


@pytest.fixture(scope="module")
def tokenizer():
    return byte_tokenizer()


def _scorer(tokenizer):
    # The adapter makes "y" likelier; the reference is uniform. Context-free, so a reward is a sum
    # over the scored tokens only: it tells which text was scored as the answer.
    return AdapterScorer(len(tokenizer), boosts={tokenizer.convert_tokens_to_ids("y"): 3.0}, base_boosts={})


def _reward(scorer, tokenizer, text, beta=0.1):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return beta * sum(scorer.logprob(t) - scorer.base.logprob(t) for t in ids)


def test_dialogues_are_split_at_the_last_assistant_turn(tokenizer):
    scorer = _scorer(tokenizer)
    data = [_hh(" Call a locksmith, yes.", " Use a hairpin."), _hh(" Try the spare key.", " yyy")]
    metrics = tasks.create("preference").run(scorer, tokenizer, data)
    chosen = [" Call a locksmith, yes.", " Try the spare key."]
    # Only the final replies are scored: the shared dialogue would add its own reward to both sides.
    assert metrics["chosen_reward"] == pytest.approx(sum(_reward(scorer, tokenizer, c) for c in chosen) / 2, rel=1e-5)
    assert metrics["preference_accuracy"] == pytest.approx(0.5) and metrics["n"] == 2 and metrics["skipped"] == 0


def test_malformed_dialogue_names_row_and_field_or_is_skipped(tokenizer):
    data = [_hh(" Fine.", " No."), _hh(" Sure.", "  "), _hh(" Ok.", " Nope.")]
    with pytest.raises(DataError, match=r"row 2: empty final assistant reply in field 'rejected' .*skip_malformed"):
        tasks.create("preference").run(_scorer(tokenizer), tokenizer, data)
    metrics = tasks.create("preference").run(_scorer(tokenizer), tokenizer, data, skip_malformed=True)
    assert metrics["n"] == 2 and metrics["skipped"] == 1 and metrics["skipped_rows"] == [2]


def test_too_long_answer_names_the_row_and_which_answer(tokenizer):
    data = [_hh(" Fine.", " No."), _hh(" Sure.", " Nope."), _hh(" Ok.", " " + "x" * 80)]
    with pytest.raises(UserError, match=r"^row 3's rejected answer: the continuation has 81 tokens"):
        tasks.create("preference").run(_scorer(tokenizer), tokenizer, data, max_length=64)
    metrics = tasks.create("preference").run(_scorer(tokenizer), tokenizer, data, max_length=64,
                                             skip_malformed=True)
    assert metrics["n"] == 2 and metrics["skipped_rows"] == [3]


def test_gzipped_jsonl_rows_load(tmp_path):
    path = tmp_path / "pairs.jsonl.gz"
    path.write_bytes(gzip.compress((json.dumps(_hh(" a", " b")) + "\n" + json.dumps(_hh(" c", " d")) + "\n").encode()))
    assert load_rows(path) == [_hh(" a", " b"), _hh(" c", " d")]
    (tmp_path / "bad.jsonl.gz").write_bytes(b"not gzip")
    with pytest.raises(DataError, match="not a readable gzip file"):
        load_rows(tmp_path / "bad.jsonl.gz")


@pytest.mark.skipif(not HH.is_file(), reason=f"{HH} not present")
def test_real_hh_file(tokenizer):
    data = load_rows(HH)[:100]  # row 87 has an empty final reply in the real file
    with pytest.raises(DataError, match=r"^row 87: empty final assistant reply"):
        tasks.create("preference").run(_scorer(tokenizer), tokenizer, data)
    metrics = tasks.create("preference").run(_scorer(tokenizer), tokenizer, data, skip_malformed=True, batch_size=16)
    assert 87 in metrics["skipped_rows"] and metrics["n"] + metrics["skipped"] == 100
    assert 0.0 <= metrics["preference_accuracy"] <= 1.0
