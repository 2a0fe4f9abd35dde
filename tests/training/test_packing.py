"""Padding-free packing: the same examples give the same loss and gradients as a padded batch, and
attention stays inside each example."""

from __future__ import annotations

import pytest
import torch

from securefed.data.config import DataConfig
from securefed.data.loading import load_examples
from securefed.models.config import LoraConfig, ModelConfig
from securefed.models.loading import attach_lora, load_base
from securefed.training.batches import collate, collate_packed, tokenize_all, useful_tokens
from securefed.training.sft import sft_loss


@pytest.fixture(scope="module")
def setup():
    base, tokenizer, _ = load_base(ModelConfig())
    model = attach_lora(base, LoraConfig(dropout=0.0), seed=0)
    with torch.no_grad():  # a non-zero adapter, so gradients reach both LoRA matrices
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    items = tokenize_all(tokenizer, load_examples(DataConfig(), seed=0).train[:8], 96)
    assert len({len(t.input_ids) for t in items}) > 1  # ragged: the padded batch really pads
    return model, tokenizer, items


def _loss_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    model.train()
    loss = sft_loss(model, batch)
    loss.backward()
    return float(loss), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_packed_loss_and_grads_equal_padded(setup):
    model, tokenizer, items = setup
    padded, packed = collate(items, tokenizer.pad_token_id), collate_packed(items, tokenizer.pad_token_id)
    assert packed["input_ids"].shape == (1, sum(len(t.input_ids) for t in items))
    assert useful_tokens(padded) == useful_tokens(packed) < padded["input_ids"].numel()
    a, ga = _loss_and_grads(model, padded)
    b, gb = _loss_and_grads(model, packed)
    assert abs(a - b) < 1e-4
    for n in ga:
        torch.testing.assert_close(ga[n], gb[n], atol=1e-5, rtol=1e-4)


def test_without_position_restarts_examples_would_attend_across(setup):
    # The control: the same packed row read as one long sequence gives a different loss, so the
    # equality above comes from the per-example attention, not from an insensitive loss.
    model, tokenizer, items = setup
    packed = collate_packed(items, tokenizer.pad_token_id)
    joined = {k: v for k, v in packed.items() if k != "position_ids"}
    a, _ = _loss_and_grads(model, packed)
    b, _ = _loss_and_grads(model, joined)
    assert abs(a - b) > 1e-3


def test_first_token_of_each_example_is_unlabelled(setup):
    _, tokenizer, items = setup
    packed = collate_packed(items, tokenizer.pad_token_id)
    starts = (packed["position_ids"][0] == 0).nonzero().flatten()
    assert len(starts) == len(items)
    assert (packed["labels"][0, starts] == -100).all()


@pytest.mark.parametrize("layout", [collate, collate_packed])
def test_sft_loss_on_labelled_positions_equals_full_logit_loss(setup, layout):
    # sft_loss sends only the positions that predict a response token through the LM head; the
    # model's own loss computes logits everywhere. Same value and same LoRA gradients.
    model, tokenizer, items = setup
    batch = layout(items, tokenizer.pad_token_id)
    a, ga = _loss_and_grads(model, batch)
    model.zero_grad(set_to_none=True)
    model.train()
    full = model(**batch, use_cache=False).loss
    full.backward()
    assert abs(a - float(full)) < 1e-5
    for n, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(ga[n], p.grad, atol=1e-6, rtol=1e-5)


def test_eval_loss_is_token_weighted_nll_of_the_full_logits(setup):
    from securefed.training.sft import eval_loss

    model, tokenizer, items = setup
    batches = [collate(items[:3], tokenizer.pad_token_id), collate(items[3:], tokenizer.pad_token_id)]
    total, count = 0.0, 0
    with torch.no_grad():
        for b in batches:
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits  # (B, T, V)
            target = b["labels"][:, 1:]
            total += float(torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), target, reduction="sum"))
            count += int((target != -100).sum())
    assert abs(eval_loss(model, batches, torch.device("cpu")) - total / count) < 1e-5
