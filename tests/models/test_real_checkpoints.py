"""Any checkpoint a user has: directories without a tokenizer, GGUF files, context length caps,
and k-bit (bitsandbytes) bases whose LoRA update keeps the layout the protocols expect."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from securefed.errors import ModelError
from securefed.models.adapter import get_adapter_state
from securefed.models.config import LoraConfig, ModelConfig
from securefed.models.loading import attach_lora, load_base
from securefed.models.sources import fit_max_length, resolve_path
from securefed.models.tiny import default_model_dir


def test_model_dir_without_tokenizer_is_a_one_line_error(tmp_path):
    src = default_model_dir()
    for name in ("config.json", "model.safetensors", "generation_config.json"):
        if (src / name).exists():
            shutil.copy(src / name, tmp_path / name)
    with pytest.raises(ModelError, match="has no tokenizer"):
        load_base(ModelConfig(name_or_path=str(tmp_path)))


def test_missing_gguf_file_is_named(tmp_path):
    with pytest.raises(ModelError, match="no such GGUF file"):
        resolve_path(str(tmp_path / "absent.gguf"))


def test_max_length_is_capped_at_the_model_context_with_a_warning():
    base, _, _ = load_base(ModelConfig())
    assert base.config.max_position_embeddings == 512
    with pytest.warns(UserWarning, match="exceeds the model's context of 512"):
        assert fit_max_length(base, 1024) == 512
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fit_max_length(base, 256) == 256


@pytest.mark.parametrize("quantization", ["4bit", "8bit"])
def test_kbit_base_trains_lora_with_the_fp32_adapter_layout(quantization):
    pytest.importorskip("bitsandbytes")
    full = attach_lora(load_base(ModelConfig())[0], LoraConfig(), seed=0)
    base, _, _ = load_base(ModelConfig(quantization=quantization))
    kind = type(base.model.layers[0].self_attn.q_proj).__name__
    assert kind in {"Linear4bit", "Linear8bitLt"}, kind
    model = attach_lora(base, LoraConfig(), seed=0, gradient_checkpointing=True)
    state, ref = get_adapter_state(model), get_adapter_state(full)
    # Only LoRA travels: same keys, shapes and dtype whether the frozen base is 4-bit, 8-bit or fp32.
    assert {k: (v.shape, v.dtype) for k, v in state.items()} == {k: (v.shape, v.dtype) for k, v in ref.items()}
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    model.train()
    ids = torch.randint(3, 200, (2, 16))
    model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


SMOL = Path(os.environ.get("SECUREFED_SMOLLM2_GGUF", "")) if os.environ.get("SECUREFED_SMOLLM2_GGUF") else None


@pytest.mark.skipif(SMOL is None, reason="set SECUREFED_SMOLLM2_GGUF to a .gguf file (real-model check)")
def test_gguf_file_loads_as_a_model_with_its_chat_template():
    base, tokenizer, _ = load_base(ModelConfig(name_or_path=str(SMOL)))
    assert tokenizer.chat_template and base.config.max_position_embeddings >= 2048
