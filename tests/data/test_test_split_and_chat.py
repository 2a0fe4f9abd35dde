"""The held-out TEST split (never trained on, fixed by the seed) and chat-template rendering."""

from __future__ import annotations

from collections import Counter

import pytest

from securefed.data.chat import render_loaded
from securefed.data.config import DataConfig
from securefed.data.convert import _dialogue_turns
from securefed.data.loading import load_examples, load_preferences, heldout_test_indices
from securefed.errors import ConfigError
from securefed.models.config import ModelConfig
from securefed.models.loading import load_base
from securefed.training.batches import IGNORE, tokenize_example

CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)


def test_test_rows_are_fixed_by_the_seed_and_disjoint_from_train_and_eval():
    a = load_examples(DataConfig(test_fraction=0.2), seed=3)
    b = load_examples(DataConfig(test_fraction=0.2, max_examples=100, eval_fraction=0.3), seed=3)
    assert a.test and a.test == b.test  # the cap and the eval share do not move TEST rows
    for data in (a, b):
        assert not set(data.test) & set(data.train) and not set(data.test) & set(data.eval)
    assert load_examples(DataConfig(test_fraction=0.2), seed=4).test != a.test
    n = len(a.train) + len(a.eval) + len(a.test)
    assert len(a.test) == round(0.2 * n) == len(heldout_test_indices(n, 0.2, 3))


def test_no_test_split_keeps_the_old_train_eval_split():
    data = load_examples(DataConfig(), seed=0)
    assert data.test == () and data.eval


def test_preference_pairs_get_a_test_split_too():
    data = load_preferences(DataConfig(test_fraction=0.25), seed=0)
    assert data.test and not set(data.test) & set(data.train)


def test_simulation_evaluates_on_test_rows_only(tmp_path):
    from securefed.config import load_config
    from securefed.simulation.world import build_world

    world = build_world(load_config(None, ["parties=2", "data.test_fraction=0.2", "data.max_examples=120",
                                           "evaluation.max_examples=500"]))
    data = load_examples(world.cfg.data, seed=0)
    # every TEST row once (batched by length, so in another order), nothing else
    assert Counter(world.evalset.examples) == Counter(data.test)
    assert not set(world.evalset.examples) & set(data.train)


@pytest.fixture(scope="module")
def chat_tokenizer():
    _, tokenizer, _ = load_base(ModelConfig())
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def test_chat_rendering_puts_the_loss_on_the_assistant_reply_only(chat_tokenizer):
    data = load_examples(DataConfig(), seed=0)
    rendered = render_loaded(data, chat_tokenizer, "auto")
    ex = rendered.train[0]
    assert ex.prompt.startswith("<s>user\nReview: ") and ex.prompt.endswith("<s>assistant\n")
    assert ex.response == data.train[0].response.strip() == ex.label
    tok = tokenize_example(chat_tokenizer, ex.prompt, ex.response, 128)
    assert tok.input_ids.count(chat_tokenizer.bos_token_id) == 2  # the template's, not a doubled BOS
    target = [t for t, lab in zip(tok.input_ids, tok.labels) if lab != IGNORE]
    assert chat_tokenizer.decode(target) == ex.response + chat_tokenizer.eos_token
    assert render_loaded(data, chat_tokenizer, "template") is data  # the preset's text template forced


def test_chat_style_without_a_chat_template_is_a_config_error():
    _, tokenizer, _ = load_base(ModelConfig())
    assert not tokenizer.chat_template
    data = load_examples(DataConfig(), seed=0)
    assert render_loaded(data, tokenizer, "auto") is data  # the embedded tiny model keeps its template
    with pytest.raises(ConfigError, match="no chat template"):
        render_loaded(data, tokenizer, "chat")


def test_hh_dialogue_becomes_turns():
    prefix = "\n\nHuman: hi\n\nAssistant: hello\n\nthere\n\nHuman: how?\n\nAssistant:"
    assert _dialogue_turns(prefix) == (("user", "hi"), ("assistant", "hello\n\nthere"), ("user", "how?"))


def test_gzipped_jsonl_is_read(tmp_path):
    import gzip
    import json

    rows = [{"chosen": f"\n\nHuman: q{i}\n\nAssistant: yes", "rejected": f"\n\nHuman: q{i}\n\nAssistant: no"}
            for i in range(6)]
    path = tmp_path / "pairs.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
    data = load_preferences(DataConfig(source=str(path), eval_fraction=0.0), seed=0)
    assert sorted(p.prompt for p in data.train) == sorted(f"Human: q{i}\n\nAssistant:" for i in range(6))
