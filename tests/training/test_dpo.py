"""Federated DPO: the loss on hand-computable numbers, the reference model, the local trainer and
end-to-end simulations on the embedded tiny model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from securefed import algorithms
from securefed.algorithms.base import ClientContext
from securefed.algorithms.config import AlgorithmConfig
from securefed.config import load_config
from securefed.data.types import PreferenceExample
from securefed.errors import ConfigError
from securefed.evaluation.scoring import continuation_logprobs
from securefed.models.adapter import get_adapter_state, set_adapter_state
from securefed.models.loading import attach_lora, load_base
from securefed.training.batches import IGNORE, Tokenized, collate
from securefed.training.dpo import (
    dpo_loss,
    policy_logprobs,
    reference_logprobs,
    sequence_logprobs,
    train_local_dpo,
)
from securefed.training.preference_batches import collate_pairs, draw_pair_batches, tokenize_pairs


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


# --- the loss ---------------------------------------------------------------------------------------


def test_dpo_loss_on_hand_computed_log_probs():
    # pair 0: beta*((-1 - -2) - (-3 - -2)) = 0.5 * (1 + 1) = 1      -> loss log(1 + e^-1)
    # pair 1: policy == reference                                   -> margin 0, loss log 2
    # pair 2: beta*((-4 - -2) - (-1 - -2)) = 0.5 * (-2 - 1) = -1.5  -> loss log(1 + e^1.5)
    loss, margin = dpo_loss(t(-1.0, -5.0, -4.0), t(-3.0, -7.0, -1.0), t(-2.0, -5.0, -2.0), t(-2.0, -7.0, -2.0), 0.5)
    assert margin.tolist() == [1.0, 0.0, -1.5]
    assert loss[0].item() == pytest.approx(0.31326168751822286, abs=1e-12)
    assert loss[1].item() == pytest.approx(math.log(2), abs=1e-12)
    assert loss[2].item() == pytest.approx(1.7014132779827524, abs=1e-12)
    # beta scales the margin linearly: beta 0.1, log-ratio difference 20 -> margin 2
    loss, margin = dpo_loss(t(-10.0), t(-30.0), t(-20.0), t(-20.0), 0.1)
    assert margin.item() == pytest.approx(2.0, abs=1e-12)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-2.0)), abs=1e-12)


def test_dpo_loss_gradient_is_minus_beta_sigmoid_of_minus_margin():
    pc, pr = t(-1.0).requires_grad_(), t(-3.0).requires_grad_()
    loss, margin = dpo_loss(pc, pr, t(-2.0), t(-2.0), 0.5)
    loss.sum().backward()
    expected = 0.5 / (1.0 + math.exp(1.0))  # beta * sigmoid(-margin), margin = 1
    assert pc.grad.item() == pytest.approx(-expected, abs=1e-12)
    assert pr.grad.item() == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(t(0.0), t(0.0), t(0.0), t(0.0), 0.0)


def test_sequence_logprobs_sum_response_tokens_only():
    # Vocabulary of 4, uniform logits except position 1 which puts log-prob log(1/2) on token 3.
    logits = torch.zeros(1, 5, 4)
    logits[0, 1] = torch.tensor([0.0, 0.0, 0.0, math.log(3.0)])  # p(3) = 3/6 = 1/2, others 1/6
    # tokens 0..4: prompt, prompt, response(3), response(1), padding; position t-1 predicts token t.
    labels = torch.tensor([[IGNORE, IGNORE, 3, 1, IGNORE]])
    got = sequence_logprobs(logits, labels)
    assert got.item() == pytest.approx(math.log(0.5) + math.log(0.25), abs=1e-6)
    # changing logits at prompt-predicting or padding positions changes nothing
    logits[0, 0] = 5.0
    logits[0, 3] = torch.tensor([9.0, -9.0, 3.0, 1.0])
    assert sequence_logprobs(logits, labels).item() == pytest.approx(got.item(), abs=1e-6)


# --- on the tiny model --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    cfg = load_config(None, ["lora.target_modules=all-linear"])
    base, tokenizer, device = load_base(cfg.model)
    model = attach_lora(base, cfg.lora, seed=0)
    plain, _, _ = load_base(cfg.model)  # an untouched copy of the same base
    return model, plain, tokenizer, device, cfg


PAIRS = [
    PreferenceExample("Review: great fun lovely\nSentiment:", " positive", " negative"),
    PreferenceExample("Review: awful dirty slow food\nSentiment:", " negative", " neutral"),
    PreferenceExample("Review: okay plain\nSentiment:", " neutral", " positive"),
]


def random_adapter(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g) * 0.3 for k, v in get_adapter_state(model).items()}


def test_reference_is_the_base_model_with_the_adapter_disabled(tiny):
    model, plain, tokenizer, _, _ = tiny
    batch = collate_pairs(tokenize_pairs(tokenizer, PAIRS, 48), tokenizer.pad_token_id)
    set_adapter_state(model, random_adapter(model))
    model.train()
    ref = reference_logprobs(model, batch)
    assert model.training  # the mode is restored
    with torch.no_grad():
        base = sequence_logprobs(plain(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                                 batch["labels"])
        model.eval()
        policy = policy_logprobs(model, batch)
    assert torch.allclose(ref, base, atol=1e-5, rtol=0)
    assert not ref.requires_grad
    assert (policy - base).abs().max() > 1e-2  # the adapter is active again outside the reference


def test_sequence_logprobs_match_the_independent_scorer(tiny):
    model, _, tokenizer, _, _ = tiny
    set_adapter_state(model, random_adapter(model, seed=2))
    model.eval()
    items = []
    for p in PAIRS:  # prompt + response without EOS, so the spans match continuation_logprobs
        pi = tokenizer(p.prompt)["input_ids"]
        ri = tokenizer(p.chosen, add_special_tokens=False)["input_ids"]
        items.append(Tokenized(tuple(pi + ri), tuple([IGNORE] * len(pi) + ri)))
    with torch.no_grad():
        ours = policy_logprobs(model, collate(items, tokenizer.pad_token_id))
    theirs = continuation_logprobs(model, tokenizer, [p.prompt for p in PAIRS], [p.chosen for p in PAIRS])
    assert ours.tolist() == pytest.approx([s.logprob for s in theirs], abs=1e-4)


@pytest.mark.parametrize("name", ["fedavg", "scaffold"])
def test_local_dpo_changes_only_the_lora_weights(tiny, name):
    model, _, tokenizer, device, cfg = tiny
    cfg = load_config(None, ["training.max_steps=3", "training.batch_size=3", "training.lr=0.01",
                             f"algorithm.name={name}"])
    start = {k: torch.zeros_like(v) if "lora_B" in k else v for k, v in get_adapter_state(model).items()}
    data = tokenize_pairs(tokenizer, PAIRS, 48)
    batches = draw_pair_batches(data, 3, 3, np.random.default_rng(0), tokenizer.pad_token_id)
    algorithm = algorithms.create(AlgorithmConfig(name=name), 2)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    ctx = ClientContext(start, algorithm.init_server(start).control)
    result = train_local_dpo(model, batches, cfg.training, 0.01, algorithm, ctx, algorithm.init_client(start),
                             device, beta=0.5)
    for n, p in model.named_parameters():
        if "lora_" not in n:
            assert torch.equal(p, frozen[n]), n
    assert set(result.delta) == set(start)
    assert max(float(d.abs().max()) for d in result.delta.values()) > 0
    assert result.steps == 3 and 0 < result.train_loss < math.log(2) + 1e-6
    assert (result.control_delta is not None) == (name == "scaffold")
    # the updated policy prefers the chosen responses it was trained on
    with torch.no_grad():
        batch = collate_pairs(data, tokenizer.pad_token_id)
        policy, ref = policy_logprobs(model, batch), reference_logprobs(model, batch)
        _, margin = dpo_loss(policy[:3], policy[3:], ref[:3], ref[3:], 0.5)
    assert (margin > 0).all()


def test_first_step_from_a_zero_adapter_has_loss_log_2(tiny):
    model, _, tokenizer, device, _ = tiny
    cfg = load_config(None, ["training.max_steps=1", "training.batch_size=3"])
    start = {k: torch.zeros_like(v) if "lora_B" in k else v for k, v in get_adapter_state(model).items()}
    batches = [collate_pairs(tokenize_pairs(tokenizer, PAIRS, 48), tokenizer.pad_token_id)]
    algorithm = algorithms.create(AlgorithmConfig(name="fedavg"), 1)
    result = train_local_dpo(model, batches, cfg.training, 1e-3, algorithm, ClientContext(start, None),
                             algorithm.init_client(start), device)
    assert result.train_loss == pytest.approx(math.log(2), abs=1e-6)  # policy == reference: margin 0


# --- config -------------------------------------------------------------------------------------------


def test_dpo_config():
    cfg = load_config(None, ["task=dpo", "dpo.beta=0.25"])
    assert cfg.task == "dpo" and cfg.dpo.beta == 0.25
    assert load_config(None, []).dpo.beta == 0.1
    for bad in ["dpo.beta=0", "dpo.beta=-1", "dpo.beta=inf", "dpo.gamma=1", "task=ppo"]:
        with pytest.raises(ConfigError, match=bad.split("=")[0]):
            load_config(None, [bad])


def test_preference_pairs_are_keyed_by_their_chosen_label():
    from securefed.training.preference_batches import load_pairs

    cfg = load_config(None, ["task=dpo", "data.max_examples=60", "data.partition.method=dirichlet"])
    pairs = load_pairs(cfg.data, seed=0)
    assert len(pairs.train) == 54 and len(pairs.eval) == 6 and pairs.labels is None
    assert set(pairs.partition_keys) == {"negative", "neutral", "positive"}
    assert all(p.chosen.strip() == k and p.rejected != p.chosen for p, k in zip(pairs.train, pairs.partition_keys))
    with pytest.raises(ConfigError, match="partition.column"):
        load_pairs(load_config(None, ["data.partition.column=topic"]).data, seed=0)


# --- simulation -----------------------------------------------------------------------------------------


def rows_of(out):
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("algorithm,protocol", [("fedavg", "plain"), ("fedadam", "secagg")])
def test_two_round_federated_dpo_simulation(tmp_path, small_overrides, algorithm, protocol):
    from securefed.simulation.runner import simulate

    cfg = load_config(None, small_overrides + ["task=dpo", f"algorithm.name={algorithm}",
                                               f"aggregation.protocol={protocol}"])
    summary = simulate(cfg, tmp_path / "run")
    rows = rows_of(tmp_path / "run")
    assert [r["round"] for r in rows] == [1, 2]
    for r in rows:
        assert r["contributors"] == 3 and r["protocol"] == protocol
        assert 0 <= r["preference_accuracy"] <= 1
        assert math.isfinite(r["reward_margin"]) and math.isfinite(r["chosen_reward"])
        assert r["reward_margin"] == pytest.approx(r["chosen_reward"] - r["rejected_reward"], abs=1e-9)
        assert 0 < r["eval_loss"] < 5 and 0 < r["train_loss"] < 5
        assert "accuracy" not in r  # no generated-label scoring for preference pairs
    assert summary["final"]["round"] == 2
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").exists()
    assert json.loads((tmp_path / "run" / "config.json").read_text())["task"] == "dpo"


@pytest.mark.slow
def test_federated_dpo_raises_preference_accuracy(tmp_path):
    from securefed.simulation.runner import simulate

    cfg = load_config(None, [
        "task=dpo", "parties=2", "rounds=2", "lora.target_modules=all-linear", "training.max_steps=15",
        "training.batch_size=8", "training.lr=1e-2", "training.max_length=48", "data.max_examples=500",
        "data.eval_max=96", "evaluation.max_examples=96", "evaluation.batch_size=48",
    ])
    simulate(cfg, tmp_path / "run")
    final = rows_of(tmp_path / "run")[-1]
    # before training policy == reference: every margin is 0, accuracy 0 (ties count as wrong), loss log 2
    assert final["preference_accuracy"] > 0.55 and final["reward_margin"] > 0 and final["eval_loss"] < math.log(2)
