"""Example-level DP-SGD for DPO: the privacy unit is a preference pair (chosen, rejected rows), so the
privatised gradient must equal a manual per-PAIR computation (grad of the pair's DPO loss, clipped to
C as one vector, summed, divided by the expected batch of pairs)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from securefed.algorithms.base import ClientContext, ClientState
from securefed.models.adapter import adapter_params, get_adapter_state
from securefed.training.config import TrainingConfig
from securefed.training.dp_sgd import DPSGDParams, train_local_dp
from securefed.training.dpo import batch_dpo_loss, dpo_dp_task, reference_logprobs
from securefed.training.preference_batches import TokenizedPair, collate_pairs

from _privacy_helpers import clipped_mean, records, spy_algorithm, tiny_lora

BETA = 0.5
C = 0.01  # small enough that every pair is clipped: the test checks the clipping, not a no-op


def pairs(n: int) -> list[TokenizedPair]:
    rows = records(2 * n, seed=7)
    return [TokenizedPair(rows[i], rows[n + i]) for i in range(n)]


def manual_pair_grads(model, data):
    params = adapter_params(model)
    out = []
    for pair in data:
        model.zero_grad(set_to_none=True)
        batch_dpo_loss(model, collate_pairs([pair], pad_id=2), BETA)[0].sum().backward()
        out.append({k: p.grad.detach().clone() for k, p in params.items()})
    model.zero_grad(set_to_none=True)
    return out



@pytest.mark.parametrize("clipping", ["all", "none", "some"])
def test_privatised_dpo_gradient_matches_manual_per_pair_clipping(clipping):
    """"all": every pair clipped (checks the per-pair norm); "none"/"some": unclipped pairs keep their
    scale, which checks the 1/2 undoing Opacus's rescaling by 2B rows of a mean over B pairs."""
    model, data = tiny_lora(), pairs(6)
    grads = manual_pair_grads(model, data)
    norms = sorted(clipped_mean(grads, 1.0, 1)[1])
    clip = {"all": C, "none": 1e6, "some": (norms[2] + norms[3]) / 2}[clipping]
    expected, norms = clipped_mean(grads, clip, len(data))
    n_clipped = sum(nm > clip for nm in norms)
    assert n_clipped == {"all": 6, "none": 0, "some": 3}[clipping]
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    before = get_adapter_state(model)
    seen: list = []
    cfg = TrainingConfig(max_steps=1, batch_size=4, max_grad_norm=None, lr=1e-2)  # 6 pairs: 2 micro-batches
    dp = DPSGDParams(noise_multiplier=0.0, max_grad_norm=clip, sample_rate=1.0, grad_sample_mode="auto")
    out = train_local_dp(model, data, 2, cfg, 1e-2, spy_algorithm(seen), ClientContext(before), ClientState(),
                         torch.device("cpu"), dp, task=dpo_dp_task(BETA))
    assert out.grad_sample_mode == "hooks" and out.mean_batch == 6  # Poisson batch counted in pairs
    got = seen[0]
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], atol=1e-8, rtol=1e-4)
    # per-ROW clipping (each row's contribution clipped alone) is a different vector: the test tells them apart
    if clipping == "all":
        rowwise = [g for pair in data for g in manual_row_grads(model, pair)]
        row_clipped, _ = clipped_mean(rowwise, clip, len(data))
        assert max((row_clipped[k] - expected[k]).abs().max().item() for k in expected) > 1e-4
    # LoRA weights moved, the base did not, and Opacus left no hooks or per-sample state behind
    assert all(out.result.delta[k].abs().max() > 0 for k in before)
    for n, p in model.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, frozen[n]), n
        assert not hasattr(p, "grad_sample") or p.grad_sample is None
    assert not any(m._backward_hooks or m._forward_hooks for m in model.modules())
    assert math.isfinite(out.result.train_loss) and out.result.train_loss > 0


def manual_row_grads(model, pair):
    """The chosen row's and the rejected row's separate contributions to the pair's gradient."""
    from securefed.training.dpo import dpo_loss, policy_logprobs

    params = adapter_params(model)
    batch = collate_pairs([pair], pad_id=2)
    ref = reference_logprobs(model, batch)
    out = []
    for row in (0, 1):
        model.zero_grad(set_to_none=True)
        pol = policy_logprobs(model, batch)
        pol = torch.where(torch.arange(2) == row, pol, pol.detach())  # gradient through one row only
        dpo_loss(pol[:1], pol[1:], ref[:1], ref[1:], BETA)[0].sum().backward()
        out.append({k: p.grad.detach().clone() for k, p in params.items()})
    model.zero_grad(set_to_none=True)
    return out


def test_reference_forward_records_no_per_sample_state():
    from opacus.grad_sample.utils import prepare_module

    model, data = tiny_lora(), pairs(3)
    model.train()
    hooks = prepare_module(model, "hooks", wrap_model=False, batch_first=True, loss_reduction="mean")
    try:
        reference_logprobs(model, collate_pairs(data, pad_id=2))
        assert not any(getattr(m, "activations", None) for m in model.modules())
        assert all(getattr(p, "grad_sample", None) is None for p in adapter_params(model).values())
    finally:
        hooks.cleanup()
        model.eval()


def test_ghost_mode_is_refused_for_pairs():
    model, data = tiny_lora(), pairs(2)
    dp = DPSGDParams(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=1.0, grad_sample_mode="ghost")
    with pytest.raises(ValueError, match="ghost"):
        train_local_dp(model, data, 2, TrainingConfig(max_steps=1, batch_size=2), 1e-3, spy_algorithm([]),
                       ClientContext(get_adapter_state(model)), ClientState(), torch.device("cpu"), dp,
                       task=dpo_dp_task(BETA))


def test_empty_pair_batches_and_secure_mode_run():
    model, data = tiny_lora(), pairs(5)
    dp = DPSGDParams(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.3, secure_mode=True)
    out = train_local_dp(model, data, 2, TrainingConfig(max_steps=3, batch_size=2), 1e-3, spy_algorithm([]),
                         ClientContext(get_adapter_state(model)), ClientState(), torch.device("cpu"), dp,
                         task=dpo_dp_task(BETA))
    assert out.steps == 3 and out.result.delta


def test_dpo_with_example_level_dp_in_simulation(tmp_path, small_overrides):
    from securefed.config import load_config
    from securefed.simulation.runner import simulate

    cfg = load_config(None, small_overrides + ["task=dpo", "privacy.mechanism=example",
                                               "privacy.noise_multiplier=1.0", "privacy.max_grad_norm=1.0"])
    simulate(cfg, tmp_path / "run")
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2] and [r["selected"] for r in rows] == [3, 3]
    e1, e2 = rows[0]["dp_epsilon"], rows[1]["dp_epsilon"]
    assert sorted(e1) == ["party-00", "party-01", "party-02"]
    assert all(0 < e1[p] < e2[p] < math.inf for p in e1)  # composed across rounds, per party
    for r in rows:
        assert 0 <= r["preference_accuracy"] <= 1
        assert math.isfinite(r["reward_margin"]) and math.isfinite(r["chosen_reward"])
        assert r["reward_margin"] == pytest.approx(r["chosen_reward"] - r["rejected_reward"], abs=1e-9)
        assert 0 < r["eval_loss"] < 5 and 0 < r["train_loss"] < 5
