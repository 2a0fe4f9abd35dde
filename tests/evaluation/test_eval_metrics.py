"""Pure metrics on inputs small enough to check by hand."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from securefed.evaluation import metrics as M

LABELS = ["positive", "neutral", "negative"]


def test_accuracy_counts_none_as_wrong():
    assert M.accuracy(["a", None, "c", "d"], ["a", "b", "c", "x"]) == 0.5
    with pytest.raises(ValueError):
        M.accuracy(["a"], ["a", "b"])
    with pytest.raises(ValueError):
        M.accuracy([], [])


def test_macro_f1_hand_worked_confusion_matrix():
    refs = ["positive", "positive", "positive", "neutral", "neutral", "negative"]
    preds = ["positive", "positive", "neutral", "neutral", None, "positive"]
    # positive: TP=2 FP=1 FN=1 -> 4/6; neutral: TP=1 FP=1 FN=1 (the None) -> 2/4;
    # negative: TP=0 FP=0 FN=1 -> 0.  Mean over 3 classes = (2/3 + 1/2 + 0) / 3 = 7/18.
    assert M.macro_f1(preds, refs, LABELS) == pytest.approx(7 / 18, abs=1e-12)
    # A class with no support and no predictions scores 0 and still counts in the mean.
    assert M.macro_f1(preds, refs, LABELS + ["other"]) == pytest.approx(7 / 24, abs=1e-12)
    # A prediction outside the label set behaves like None.
    other = ["positive", "positive", "neutral", "neutral", "banana", "positive"]
    assert M.macro_f1(other, refs, LABELS) == pytest.approx(7 / 18, abs=1e-12)
    assert M.macro_f1(refs, refs, LABELS) == 1.0


def test_macro_f1_rejects_references_outside_labels():
    with pytest.raises(ValueError, match="outside the label set"):
        M.macro_f1(["positive"], ["bullish"], LABELS)


@pytest.mark.parametrize(
    "text, expected",
    [
        (" Positive", "positive"),
        ("negative.", "negative"),
        ("NEUTRAL\nThe news is routine.", "neutral"),
        ("**Negative** because profits fell", "negative"),
        ('"positive"', "positive"),
        ("Answer: neutral", "neutral"),
        ("The answer is negative", "negative"),
        ("positively great", None),  # a longer word is not the label
        ("It is not negative", None),  # the label must come first
        ("", None),
        ("bullish", None),
    ],
)
def test_parse_label(text, expected):
    assert M.parse_label(text, LABELS) == expected


def test_parse_label_prefers_longest_and_returns_given_spelling():
    assert M.parse_label("very positive!", ["Positive", "Very Positive"]) == "Very Positive"
    assert M.parse_label("positive", ["Positive", "Very Positive"]) == "Positive"


@pytest.mark.parametrize(
    "n, c, k",
    [
        (1, 0, 1),
        (1, 1, 1),
        (5, 0, 1),
        (5, 0, 5),
        (5, 5, 5),
        (5, 2, 1),
        (5, 2, 3),
        (5, 2, 4),
        (10, 3, 5),
        (10, 9, 2),
        (10, 7, 4),
        (20, 1, 20),
        (200, 13, 10),
        (200, 13, 100),
        (200, 190, 50),
    ],
)
def test_pass_at_k_matches_closed_form(n, c, k):
    # math.comb(n - c, k) is 0 when n - c < k, which gives exactly 1.0 (the edge case).
    closed_form = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
    assert M.pass_at_k(n, c, k) == pytest.approx(float(closed_form), rel=1e-12, abs=1e-12)


def test_pass_at_k_edge_values_and_errors():
    assert M.pass_at_k(10, 0, 3) == 0.0
    assert M.pass_at_k(10, 8, 3) == 1.0  # n - c = 2 < k
    assert M.pass_at_k(4, 1, 1) == pytest.approx(0.25)
    for bad in [(0, 0, 1), (5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6)]:
        with pytest.raises(ValueError):
            M.pass_at_k(*bad)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Natalia sold 48/2 = 24 clips in May.\n#### 72", "72"),
        ("#### 1,234", "1234"),
        ("So the total is $1,234,567.", "1234567"),
        ("The answer is -3.", "-3"),
        ("It costs 2.50 dollars, so 3.75 in total", "3.75"),
        ("5.0", "5"),
        ("We get 5-3 = 2", "2"),
        ("First 10 then #### 18 \n more text 99", "18"),  # the marker wins over later numbers
        ("12 apples, then an empty marker ####", "12"),  # falls back to the last number
        ("1,2345 items", "2345"),  # not a thousands group: 1 and 2345
        ("no digits at all", None),
        ("007 agents", "7"),
    ],
)
def test_extract_final_number(text, expected):
    assert M.extract_final_number(text) == expected


def test_gsm8k_exact_match():
    assert M.gsm8k_exact_match("so she has 1,000.0 left", "... #### 1000")
    assert not M.gsm8k_exact_match("so 999", "#### 1000")
    assert not M.gsm8k_exact_match("no idea", "#### 1000")


def test_refusal_detection():
    assert M.is_refusal("I'm sorry, but I can't help with that.")
    assert M.is_refusal("I\u2019m sorry, I won't do this")  # curly apostrophe
    assert M.is_refusal("As an AI language model, I ...")
    assert M.is_refusal("Well... I cannot provide that.")
    assert not M.is_refusal("Sure, here is a tutorial: step 1 ...")
    assert not M.is_refusal("")
    texts = ["I cannot do that", "Sure!", "As an AI, no.", "Here you go"]
    assert M.refusal_rate(texts) == 0.5
    assert M.refusal_rate(["Nope."], markers=["nope"]) == 1.0


def test_perplexity():
    assert M.perplexity(0.0, 5) == 1.0
    assert M.perplexity(10 * math.log(7), 10) == pytest.approx(7.0)
    with pytest.raises(ValueError):
        M.perplexity(1.0, 0)
    with pytest.raises(ValueError):
        M.perplexity(float("nan"), 3)


def test_preference_scores_hand_computed():
    # beta=0.5; rewards chosen: 0.5*(-1-(-2))=0.5, 0.5*(-3-(-3))=0, 0.5*(-2-(-1))=-0.5
    #           rewards rejected: 0.5*(-4-(-3))=-0.5, 0.5*(-3-(-3))=0, 0.5*(-1-(-2))=0.5
    # margins: 1.0, 0.0 (a tie: wrong), -1.0 -> accuracy 1/3, mean margin 0
    result = M.preference_scores([-1, -3, -2], [-4, -3, -1], [-2, -3, -1], [-3, -3, -2], beta=0.5)
    assert result.accuracy == pytest.approx(1 / 3)
    assert result.mean_margin == pytest.approx(0.0)
    assert result.mean_chosen_reward == pytest.approx(0.0)
    assert result.mean_rejected_reward == pytest.approx(0.0)
    assert result.count == 3
    with pytest.raises(ValueError):
        M.preference_scores([1.0], [1.0, 2.0], [1.0], [1.0])
    with pytest.raises(ValueError):
        M.preference_scores([1.0], [1.0], [1.0], [1.0], beta=0)
