"""Every built-in preset maps a tiny hand-written row to the expected prompt/response; the registry,
preset inference, and the `fields`/`template`/`labels` overrides behave as documented."""

from __future__ import annotations

import json

import pytest

from securefed.data import DataConfig, Preset, get_preset, load_examples, load_preferences
from securefed.data.presets import preset_names, register_preset
from securefed.data.templates import INSTRUCTION_TEMPLATE, INSTRUCTION_WITH_INPUT_TEMPLATE
from securefed.errors import ConfigError, DataError

BUILTINS = {
    "default", "alpaca", "alpaca-gpt4", "fingpt-sentiment", "medalpaca", "code-alpaca",
    "mathinstruct", "financial-phrasebank", "chat", "classification", "ultrafeedback", "hh-rlhf",
}


def _one(tmp_path, rows, **kw):
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return DataConfig(source=str(path), eval_fraction=0.0, **kw)


def test_builtin_names():
    assert BUILTINS <= set(preset_names())


@pytest.mark.parametrize("name", ["alpaca", "alpaca-gpt4", "fingpt-sentiment", "code-alpaca"])
def test_alpaca_family(tmp_path, name):
    row = {"instruction": "Translate.", "input": "bonjour", "output": "hello", "text": "ignored"}
    ex = load_examples(_one(tmp_path, [row], preset=name), seed=0).train[0]
    expected = INSTRUCTION_WITH_INPUT_TEMPLATE.format(instruction="Translate.", input="bonjour")
    assert ex.prompt == expected
    assert ex.response == "hello" and ex.label is None


def test_medalpaca_question_in_input(tmp_path):
    row = {"instruction": "Answer this question truthfully", "input": "What is a fever?",
           "output": "A raised body temperature."}
    ex = load_examples(_one(tmp_path, [row], preset="medalpaca"), seed=0).train[0]
    assert ex.prompt == INSTRUCTION_TEMPLATE.format(instruction="What is a fever?")
    assert ex.response == "A raised body temperature."


def test_mathinstruct(tmp_path):
    row = {"source": "data/CoT/gsm.json", "instruction": "What is 2+2?", "output": "4"}
    ex = load_examples(_one(tmp_path, [row], preset="mathinstruct"), seed=0).train[0]
    assert ex.prompt == INSTRUCTION_TEMPLATE.format(instruction="What is 2+2?")
    assert ex.response == "4"


def test_financial_phrasebank_row(tmp_path):
    path = tmp_path / "fpb.csv"
    path.write_text('Sentiment,Headline\npositive,"Profit rose , the company said ."\n')
    data = load_examples(DataConfig(source=str(path), eval_fraction=0.0), seed=0)  # inferred
    ex = data.train[0]
    assert ex.prompt == (
        "What is the sentiment of this news? Answer positive, neutral or negative.\n"
        "News: Profit rose , the company said .\nAnswer:"
    )
    assert ex.response == " positive" and ex.label == "positive"
    assert data.task == "classification" and data.labels == ("negative", "neutral", "positive")


def test_default_preset_format():
    ex = load_examples(DataConfig(eval_fraction=0.0), seed=0).train[0]
    assert ex.prompt.startswith("Review: ") and ex.prompt.endswith("\nSentiment:")
    assert ex.response == " " + ex.label


def test_chat_messages(tmp_path):
    row = {"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
    ]}
    ex = load_examples(_one(tmp_path, [row]), seed=0).train[0]
    assert ex.prompt == (
        "### System:\nBe brief.\n\n### User:\nHi\n\n### Assistant:\nHello.\n\n"
        "### User:\nCapital of France?\n\n### Assistant:\n"
    )
    assert ex.response == "Paris."


def test_ultrafeedback_pairs(tmp_path):
    row = {
        "prompt": "Name a fruit.",
        "chosen": [{"role": "user", "content": "Name a fruit."},
                   {"role": "assistant", "content": "Apple."}],
        "rejected": [{"role": "user", "content": "Name a fruit."},
                     {"role": "assistant", "content": "Carrot."}],
        "score_chosen": 9.0,
    }
    pair = load_preferences(_one(tmp_path, [row]), seed=0).train[0]
    assert pair.prompt == "### User:\nName a fruit.\n\n### Assistant:\n"
    assert (pair.chosen, pair.rejected) == ("Apple.", "Carrot.")
    # Plain-text answers take the prompt column.
    text_row = {"prompt": "Name a fruit.", "chosen": "Pear.", "rejected": "Stone."}
    pair = load_preferences(_one(tmp_path, [text_row], preset="ultrafeedback"), seed=0).train[0]
    assert pair.prompt == "### User:\nName a fruit.\n\n### Assistant:\n" and pair.chosen == "Pear."


def test_hh_rlhf_shared_prefix(tmp_path):
    prefix = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a joke.\n\nAssistant:"
    row = {"chosen": prefix + " Why did the chicken cross the road?",
           "rejected": prefix + " No."}
    pair = load_preferences(_one(tmp_path, [row]), seed=0).train[0]  # preset inferred
    assert pair.prompt == prefix.lstrip()
    assert pair.chosen == " Why did the chicken cross the road?" and pair.rejected == " No."
    bad = {"chosen": prefix + " A", "rejected": "\n\nHuman: Other\n\nAssistant: B"}
    with pytest.raises(DataError, match="row 1: .*do not share the prompt"):
        load_preferences(_one(tmp_path, [bad], preset="hh-rlhf"), seed=0)


def test_default_preferences_use_wrong_labels():
    prefs = load_preferences(DataConfig(eval_fraction=0.0), seed=3)
    assert len(prefs.train) == 2400
    labels = {" negative", " neutral", " positive"}
    assert all(p.chosen in labels and p.rejected in labels and p.chosen != p.rejected
               for p in prefs.train)


def test_fields_template_and_labels_overrides(tmp_path):
    row = {"question": "Why?", "answer": "Because.", "kind": "q"}
    cfg = _one(tmp_path, [row], preset="mathinstruct",
               fields={"instruction": "question", "output": "answer"},
               template="Q: {instruction}\nA:")
    ex = load_examples(cfg, seed=0).train[0]
    assert (ex.prompt, ex.response) == ("Q: Why?\nA:", "Because.")

    rows = [{"text": "fine", "label": "Good"}, {"text": "awful", "label": "bad"}]
    cfg = _one(tmp_path, rows, preset="classification", labels=["bad", "good", "meh"])
    data = load_examples(cfg, seed=0)
    assert data.labels == ("bad", "good", "meh")
    assert data.train[0].prompt == "Classify the text. Answer bad, good or meh.\nText: fine\nAnswer:"
    assert data.train[0].response == " good"  # matched case-insensitively, canonical spelling


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"preset": "mathinstruct", "template": "{question}"},
         r"data.template: unknown placeholder.*question"),
        ({"preset": "mathinstruct", "fields": {"answer": "x"}}, r"data.fields.answer: not a role"),
        ({"preset": "chat", "template": "{text}"}, r"data.template: preset 'chat'"),
        ({"preset": "alpaca", "labels": ["a", "b"]}, r"data.labels: preset 'alpaca' is not a labelled"),
    ],
)
def test_override_errors(tmp_path, kw, match):
    cfg = _one(tmp_path, [{"instruction": "a", "output": "b"}], **kw)
    with pytest.raises(ConfigError, match=match):
        load_examples(cfg, seed=0)


def test_integer_labels_index_the_label_list(tmp_path):
    rows = [{"sentence": "up", "label": 2}, {"sentence": "down", "label": 0}]
    cfg = _one(tmp_path, rows, preset="financial-phrasebank",
               fields={"text": "sentence", "label": "label"})
    assert [e.label for e in load_examples(cfg, seed=0).train] == ["positive", "negative"]


def test_registry():
    with pytest.raises(ValueError, match="already registered"):
        register_preset("alpaca", get_preset("alpaca"))
    with pytest.raises(ConfigError, match="unknown preset 'nope'; known: .*alpaca.*hh-rlhf"):
        get_preset("nope")
    with pytest.raises(ValueError, match="lacks roles"):
        Preset(kind="instruction", fields={"instruction": "q"}, template="{instruction}")
    with pytest.raises(ValueError, match="placeholder"):
        Preset(kind="classification", fields={"text": "t", "label": "l"}, template="{sentence}")
    custom = Preset(kind="classification", fields={"text": "t", "label": "l"},
                    template="{text} ->", labels=("no", "yes"))
    register_preset("test-data-custom-yesno", custom)
    assert get_preset("test-data-custom-yesno") is custom


def test_config_rejects_unknown_preset_and_extra_keys():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="unknown preset"):
        DataConfig(preset="nope")
    with pytest.raises(ValidationError):
        DataConfig(sourc="x")
    with pytest.raises(ValidationError):
        DataConfig(partition={"method": "dirichlet", "alpha": 0})


def test_cannot_infer_preset(tmp_path):
    with pytest.raises(ConfigError, match=r"cannot infer a preset from the columns \['a', 'b'\]"):
        load_examples(_one(tmp_path, [{"a": 1, "b": 2}]), seed=0)


def test_preference_preset_is_not_sft(tmp_path):
    with pytest.raises(ConfigError, match="load_preferences"):
        load_examples(_one(tmp_path, [{"chosen": "x", "rejected": "y"}]), seed=0)
    with pytest.raises(ConfigError, match="no preference pairs"):
        load_preferences(_one(tmp_path, [{"instruction": "a", "output": "b"}]), seed=0)
