"""Opacus DP-SGD on a peft LoRA model: the privatised gradient equals a manual per-example computation
(Opacus issue 820 reports silently wrong LoRA updates with newer peft; this pins that it is right here)."""

from __future__ import annotations

import pytest
import torch

from securefed.algorithms.base import ClientContext, ClientState
from securefed.models.adapter import adapter_params, get_adapter_state
from securefed.training.batches import collate
from securefed.training.config import TrainingConfig
from securefed.training.dp_sgd import DPSGDParams, per_example_loss, resolve_mode, train_local_dp

from _privacy_helpers import clipped_mean, records, spy_algorithm, tiny_lora

C = 0.05  # small enough that every example is clipped: the test checks the clipping, not a no-op


def manual_clipped_mean(model, data, clip):
    params = adapter_params(model)
    grads = []
    for item in data:
        model.zero_grad(set_to_none=True)
        b = collate([item], pad_id=2)
        per_example_loss(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits,
                         b["labels"]).sum().backward()
        grads.append({k: p.grad.detach().clone() for k, p in params.items()})
    model.zero_grad(set_to_none=True)
    return clipped_mean(grads, clip, len(data))


@pytest.mark.parametrize("mode", ["hooks", "ghost"])
def test_privatised_lora_gradient_matches_manual(mode):
    model, data = tiny_lora(), records(6)
    expected, norms = manual_clipped_mean(model, data, C)
    assert min(norms) > C  # all clipped
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    before = get_adapter_state(model)
    seen: list = []
    cfg = TrainingConfig(max_steps=1, batch_size=4, max_grad_norm=None, lr=1e-2)  # 6 records: 2 micro-batches
    dp = DPSGDParams(noise_multiplier=0.0, max_grad_norm=C, sample_rate=1.0, grad_sample_mode=mode)
    out = train_local_dp(model, data, 2, cfg, 1e-2, spy_algorithm(seen), ClientContext(before), ClientState(),
                         torch.device("cpu"), dp)
    assert out.grad_sample_mode == mode and out.mean_batch == 6
    got = seen[0]
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], atol=1e-7, rtol=1e-4)
    # LoRA weights moved, the base did not, and Opacus left no hooks or per-sample state behind
    assert all(out.result.delta[k].abs().max() > 0 for k in before)
    for n, p in model.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, frozen[n]), n
        assert not hasattr(p, "grad_sample") or p.grad_sample is None
    assert not any(m._backward_hooks or m._forward_hooks for m in model.modules())


def test_noise_has_the_promised_std():
    """noise-only step (z=5, every gradient clipped to C): std of grad = z*C/expected batch."""
    model, data = tiny_lora(), records(4)
    seen: list = []
    cfg = TrainingConfig(max_steps=1, batch_size=4, max_grad_norm=None)
    dp = DPSGDParams(noise_multiplier=50.0, max_grad_norm=C, sample_rate=1.0, grad_sample_mode="hooks", seed=3)
    expected, _ = manual_clipped_mean(model, data, C)
    train_local_dp(model, data, 2, cfg, 1e-3, spy_algorithm(seen), ClientContext(get_adapter_state(model)),
                   ClientState(), torch.device("cpu"), dp)
    noise = torch.cat([(seen[0][k] - expected[k]).reshape(-1) for k in expected])
    target = 50.0 * C / 4
    assert abs(noise.std().item() / target - 1) < 0.05  # thousands of coordinates


def test_secure_mode_and_empty_batches_run():
    model, data = tiny_lora(), records(5)
    cfg = TrainingConfig(max_steps=3, batch_size=2)
    dp = DPSGDParams(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.01, secure_mode=True)
    out = train_local_dp(model, data, 2, cfg, 1e-3, spy_algorithm([]), ClientContext(get_adapter_state(model)),
                         ClientState(), torch.device("cpu"), dp)
    assert out.steps == 3 and out.result.delta  # mostly empty batches: pure-noise steps, still a valid update


def test_auto_mode_is_ghost_for_lora_linear():
    assert resolve_mode(tiny_lora(), "auto") == "ghost"
