"""Model-running helpers: batched generation and log-likelihoods agree with one-at-a-time runs."""

from __future__ import annotations

import math

import pytest
import torch

from _eval_helpers import FixedScorer, ScriptedGenerator, byte_tokenizer, tiny_llama
from securefed.errors import UserError
from securefed.evaluation.scoring import (
    SamplingParams,
    continuation_logprobs,
    generate,
    text_nll,
    truncate_at_stop,
)


@pytest.fixture(scope="module")
def tokenizer():
    return byte_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_llama(len(tokenizer))


PROMPTS = ["Hello there", "A", "The quick brown fox jumps", "xy z"]


def test_greedy_generation_batched_equals_one_by_one(model, tokenizer):
    batched = generate(model, tokenizer, PROMPTS, max_new_tokens=6, batch_size=4)
    single = [generate(model, tokenizer, [p], max_new_tokens=6, batch_size=1)[0] for p in PROMPTS]
    assert batched == single
    assert len(batched) == len(PROMPTS)


def test_generation_left_pads_returns_only_new_text_and_restores_state():
    tokenizer = byte_tokenizer()
    fake = ScriptedGenerator(tokenizer, {"short": [" ok STOP tail"], "much longer": [" fine"]})
    tokenizer.padding_side = "right"
    out = generate(
        fake, tokenizer, ["short", "a much longer prompt"], max_new_tokens=20, stop=["STOP"]
    )
    assert out == [" ok ", " fine"]
    batch = fake.batches[0]  # [2, T]: the short prompt is padded on the left
    assert (
        batch[0, 0].item() == tokenizer.pad_token_id
        and batch[0, -1].item() != tokenizer.pad_token_id
    )
    assert fake.prompts == ["short", "a much longer prompt"]
    assert fake.kwargs[0]["do_sample"] is False
    assert tokenizer.padding_side == "right"  # restored


def test_sampling_params_reach_generate(tokenizer):
    fake = ScriptedGenerator(tokenizer, {"": ["x"]})
    generate(fake, tokenizer, ["p"], sampling=SamplingParams(temperature=0.7, top_p=0.9, seed=1))
    assert fake.kwargs[0]["do_sample"] is True
    assert fake.kwargs[0]["temperature"] == 0.7 and fake.kwargs[0]["top_p"] == 0.9
    with pytest.raises(UserError):
        SamplingParams(temperature=-1)
    with pytest.raises(UserError):
        generate(fake, tokenizer, ["p"], batch_size=0)


def test_truncate_at_stop():
    assert truncate_at_stop("abc\ndef\nclass X", ["\nclass", "\ndef"]) == "abc"
    assert truncate_at_stop("abc", ["zzz", ""]) == "abc"


CONTEXTS = [
    "Question: 2+2?\nAnswer:",
    "Q",
    "A much longer context that forces padding of the others",
]
CONTINUATIONS = [" 4", " yes indeed", " B"]


def test_loglikelihood_batched_equals_one_by_one(model, tokenizer):
    batched = continuation_logprobs(model, tokenizer, CONTEXTS, CONTINUATIONS, batch_size=3)
    single = [
        continuation_logprobs(model, tokenizer, [c], [x], batch_size=1)[0]
        for c, x in zip(CONTEXTS, CONTINUATIONS)
    ]
    for b, s in zip(batched, single):
        assert b.num_tokens == s.num_tokens
        assert b.logprob == pytest.approx(s.logprob, abs=1e-4)
        assert b.is_greedy == s.is_greedy
    assert [b.num_tokens for b in batched] == [2, 11, 2]  # byte tokens of each continuation


def test_loglikelihood_is_padding_invariant_and_matches_manual_sum(model, tokenizer):
    alone = continuation_logprobs(model, tokenizer, ["Q"], [" yes"])[0]
    padded = continuation_logprobs(
        model, tokenizer, ["Q", "x" * 80, "y" * 40], [" yes", " z", " w"], batch_size=3
    )[0]
    assert padded.logprob == pytest.approx(alone.logprob, abs=1e-4)
    # Manual reference: full forward pass, sum log P(token_t | prefix) over the continuation.
    ids = tokenizer("Q")["input_ids"] + tokenizer(" yes", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]  # [T, V]
    logprobs = torch.log_softmax(logits, dim=-1)
    manual = sum(logprobs[t - 1, ids[t]].item() for t in range(2, len(ids)))
    assert alone.logprob == pytest.approx(manual, abs=1e-4)


def test_loglikelihood_exact_with_fixed_distribution(tokenizer):
    scorer = FixedScorer(len(tokenizer), {tokenizer.convert_tokens_to_ids("B"): 3.0})
    scores = continuation_logprobs(scorer, tokenizer, ["ctx", "ctx"], [" B", " A"])
    space, b, a = (tokenizer.convert_tokens_to_ids(t) for t in ("\u0120", "B", "A"))
    assert scores[0].logprob == pytest.approx(scorer.logprob(space) + scorer.logprob(b))
    assert scores[1].logprob == pytest.approx(scorer.logprob(space) + scorer.logprob(a))
    assert not scores[0].is_greedy  # the space token is not the argmax
    assert continuation_logprobs(scorer, tokenizer, ["c"], ["B"])[0].is_greedy


def test_loglikelihood_left_truncates_the_context(tokenizer):
    scorer = FixedScorer(len(tokenizer))
    long = continuation_logprobs(scorer, tokenizer, ["x" * 50], [" ab"], max_length=8)[0]
    assert long.num_tokens == 3
    with pytest.raises(UserError, match="max_length"):
        continuation_logprobs(scorer, tokenizer, ["x"], [" abcdefgh"], max_length=8)
    with pytest.raises(UserError, match="no tokens"):
        continuation_logprobs(scorer, tokenizer, ["x"], [""])


def test_empty_context_falls_back_to_bos_without_post_processor():
    tokenizer = byte_tokenizer(add_bos=False)
    scorer = FixedScorer(len(tokenizer))
    score = continuation_logprobs(scorer, tokenizer, [""], ["ab"])[0]
    assert score.num_tokens == 2
    assert score.logprob == pytest.approx(-2 * math.log(len(tokenizer)))


def test_text_nll_uniform_model_gives_vocabulary_perplexity(tokenizer):
    scorer = FixedScorer(len(tokenizer))
    nll, tokens = text_nll(scorer, tokenizer, ["abc", "hello", "z"], batch_size=2)
    assert tokens == 3 + 5 + 1  # every byte is predicted after the BOS
    assert nll == pytest.approx(tokens * math.log(len(tokenizer)), rel=1e-6)


def test_text_nll_restores_training_mode(model, tokenizer):
    model.train()
    nll, tokens = text_nll(model, tokenizer, ["some text"], max_length=4)
    assert model.training
    model.eval()
    assert tokens == 3 and nll > 0
