"""packed_sdpa: per-example attention for packed rows gives the padded batch's loss and gradients
without the dense (N x N) mask, and leaves padded batches and generation on transformers' SDPA."""

from __future__ import annotations

import pytest
import torch

from securefed.data.config import DataConfig
from securefed.data.loading import load_examples
from securefed.models import packed_attention
from securefed.models.config import LoraConfig, ModelConfig
from securefed.models.loading import attach_lora, load_base
from securefed.training.batches import collate, collate_packed, tokenize_all
from securefed.training.sft import sft_loss


def _model(packed: bool):
    base, tokenizer, _ = load_base(ModelConfig())  # load_base switches SDPA models to packed_sdpa
    if not packed:
        base.set_attn_implementation("sdpa")  # the reference: transformers' dense block-diagonal mask
    model = attach_lora(base, LoraConfig(dropout=0.0), seed=0)
    with torch.no_grad():  # a non-zero adapter, so gradients reach both LoRA matrices
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(len(n))) * 0.05)
    return model, tokenizer


@pytest.fixture(scope="module")
def models():
    (ref, tokenizer), (fast, _) = _model(False), _model(True)
    items = tokenize_all(tokenizer, load_examples(DataConfig(), seed=0).train[:8], 96)
    assert len({len(t.input_ids) for t in items}) > 1
    return ref, fast, tokenizer, items


def _loss_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    model.train()
    loss = sft_loss(model, batch)
    loss.backward()
    model.eval()
    return float(loss), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_packed_rows_match_padded_batch_and_take_the_segment_path(models, monkeypatch):
    ref, fast, tokenizer, items = models
    assert fast.config._attn_implementation == packed_attention.NAME and ref.config._attn_implementation == "sdpa"
    calls = []
    real = packed_attention._segments
    monkeypatch.setattr(packed_attention, "_segments", lambda *a: calls.append(real(*a)) or calls[-1])
    a, ga = _loss_and_grads(ref, collate(items, tokenizer.pad_token_id))
    b, gb = _loss_and_grads(fast, collate_packed(items, tokenizer.pad_token_id))
    assert calls and all(c is not None and c[1] == len(items) for c in calls)  # every layer went per example
    assert abs(a - b) < 1e-5
    for n in ga:
        torch.testing.assert_close(ga[n], gb[n], atol=1e-5, rtol=1e-4)


def test_without_restarts_the_row_is_one_sequence(models):
    # The control: dropping the restarts gives another loss, so the match above is per-example attention.
    _, fast, tokenizer, items = models
    packed = collate_packed(items, tokenizer.pad_token_id)
    joined = {**packed, "position_ids": torch.arange(packed["input_ids"].shape[1])[None]}
    assert abs(_loss_and_grads(fast, packed)[0] - _loss_and_grads(fast, joined)[0]) > 1e-3


def test_padded_batches_and_generation_are_unchanged(models):
    ref, fast, tokenizer, items = models
    padded = collate(items, tokenizer.pad_token_id)
    with torch.no_grad():
        torch.testing.assert_close(fast(**padded).logits, ref(**padded).logits, atol=1e-5, rtol=1e-5)
    prompt = tokenizer(["Hello there", "A much longer prompt to pad the other row"], return_tensors="pt",
                       padding=True, padding_side="left")
    outs = [m.generate(**prompt, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
            for m in (ref, fast)]
    assert torch.equal(outs[0], outs[1])
