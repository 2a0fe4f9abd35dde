"""Model loading, LoRA targets per architecture, and that local training changes only LoRA weights."""

import numpy as np
import pytest
import torch

from securefed.algorithms import AlgorithmConfig, ClientContext, create
from securefed.config import load_config
from securefed.errors import ModelError
from securefed.models.adapter import get_adapter_state
from securefed.models.config import LoraConfig, ModelConfig
from securefed.models.loading import attach_lora, load_base
from securefed.models.tiny import save_tiny
from securefed.simulation.runner import simulate
from securefed.training.batches import IGNORE, draw_batches, tokenize_all, tokenize_example
from securefed.training.config import TrainingConfig
from securefed.training.sft import train_local
from securefed.data.types import Example


def test_missing_model_path_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="no such model directory"):
        load_base(ModelConfig(name_or_path=str(tmp_path / "missing")))


def test_only_lora_weights_change():
    base, tok, dev = load_base(ModelConfig())
    frozen = {n: p.detach().clone() for n, p in base.named_parameters()}
    model = attach_lora(base, LoraConfig(), seed=0)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    before = get_adapter_state(model)
    ex = [Example("Review: great fun\nSentiment:", " positive", "positive")] * 4
    batches = draw_batches(tokenize_all(tok, ex, 32), 3, 2, np.random.default_rng(0), tok.pad_token_id)
    alg = create(AlgorithmConfig(), 1)
    res = train_local(model, batches, TrainingConfig(max_steps=3, batch_size=2), 1e-2, alg,
                      ClientContext(before), alg.init_client(before), dev)
    assert any(float(v.abs().max()) > 0 for v in res.delta.values())  # LoRA moved
    for n, p in model.base_model.model.named_parameters():
        if "lora_" not in n:
            key = n.replace(".base_layer", "")
            assert torch.equal(p, frozen[key]), n  # base untouched


def test_loss_only_on_response_tokens():
    _, tok, _ = load_base(ModelConfig())
    t = tokenize_example(tok, "Review: a b c\nSentiment:", " positive", 64)
    n_prompt = len(tok("Review: a b c\nSentiment:")["input_ids"])
    assert t.labels[:n_prompt] == (IGNORE,) * n_prompt
    assert t.labels[n_prompt:] == t.input_ids[n_prompt:] and t.labels[-1] == tok.eos_token_id
    short = tokenize_example(tok, "word " * 100, " positive", 16)
    assert len(short.input_ids) == 16 and short.labels[-1] == tok.eos_token_id  # prompt cut, response kept


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])
def test_simulation_on_saved_architectures(tmp_path, small_overrides, arch):
    path = save_tiny(tmp_path / f"tiny-{arch}", arch)
    cfg = load_config(None, small_overrides + [f"model.name_or_path={path}", "rounds=1"])
    summary = simulate(cfg, tmp_path / "run")
    assert summary["final"]["eval_loss"] > 0
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").exists()


def test_default_model_built_concurrently_by_several_processes(tmp_path):
    # A server and its parties on one machine may all build the embedded model at the same moment.
    import os
    import subprocess
    import sys

    code = "from securefed.models.loading import load_base; from securefed.models.config import ModelConfig; " \
           "load_base(ModelConfig())"
    env = {**os.environ, "SECUREFED_CACHE": str(tmp_path), "PYTHONWARNINGS": "ignore"}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    errs = [p.communicate(timeout=240)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-800:] for e in errs]
    assert [p.name for p in tmp_path.iterdir()] == ["tiny-llama-v2"]
