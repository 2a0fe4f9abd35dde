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


def test_segments_are_read_once_per_position_tensor(monkeypatch) -> None:
    """All layers of one forward share one position_ids tensor: its segments (two device syncs)
    are computed once; a new tensor, even with other contents, is never served a stale entry."""
    from securefed.models import packed_attention as pa

    calls = []
    real = pa._segments
    monkeypatch.setattr(pa, "_segments", lambda pos, n: calls.append(n) or real(pos, n))
    first = torch.tensor([[0, 1, 2, 0, 1]])
    for _ in range(4):  # four layers
        slot, examples, longest = pa._segments_cached(first, 5)
    assert len(calls) == 1 and (examples, longest) == (2, 3)
    second = torch.tensor([[0, 1, 0, 1, 2]])
    assert pa._segments_cached(second, 5)[1:] == (2, 3) and len(calls) == 2
    assert pa._segments_cached(torch.tensor([[0, 1, 2, 3, 4]]), 5) is None  # one sequence: not packed


def test_cuda_attention_avoids_cudnn_inside_and_restores_after() -> None:
    """On CUDA our attention runs with flash / memory-efficient / math SDPA, not cuDNN (which plans per
    sequence length); the switch is scoped to the call. The flags exist on CPU builds too."""
    from securefed.models.packed_attention import _kernels

    before = torch.backends.cuda.cudnn_sdp_enabled()
    with _kernels(torch.device("cuda")):
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        assert torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.mem_efficient_sdp_enabled()
    assert torch.backends.cuda.cudnn_sdp_enabled() == before
    with _kernels(torch.device("cpu")):
        assert torch.backends.cuda.cudnn_sdp_enabled() == before
