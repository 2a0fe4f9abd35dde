"""Merge a run's LoRA adapter into its base: W' = W + (alpha/r) B A, saved as an ordinary safetensors
checkpoint with the tokenizer and a chat template.

The merge always goes into the full-precision base, also for a 4/8-bit (QLoRA) run: adding B A to
NF4/int8 weights would requantize them and lose most of the update, and the parties trained the
adapter against dequantized weights anyway (bitsandbytes computes in the compute dtype). So the run's
model.quantization is dropped here and the base is read in float32; the result is cast to `dtype`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from securefed.errors import UserError
from securefed.models.config import ModelConfig
from securefed.models.packed_attention import NAME as PACKED_ATTENTION

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def full_precision(model_cfg: ModelConfig, device: str = "cpu") -> ModelConfig:
    """The run's base, read unquantized in float32 (merging in fp32 keeps small updates exact)."""
    return model_cfg.model_copy(update={"quantization": "none", "dtype": "float32", "device": device})


def checkpoint_dtype(base_dir: str | Path) -> torch.dtype:
    """The dtype the base checkpoint was published in (config.json), float32 when it does not say."""
    try:
        config = json.loads((Path(base_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return torch.float32
    name = config.get("dtype") or config.get("torch_dtype") or "float32"
    return DTYPES.get(str(name), torch.float32)


def merged_model(model_cfg: ModelConfig, adapter_dir: str | Path, device: str = "cpu") -> tuple[Any, Any, Any]:
    """(merged model, tokenizer, base_path). The returned model is a plain transformers model on
    ordinary attention (the training-only packed attention is switched back to SDPA)."""
    from securefed.models.loading import load_adapter, load_base
    from securefed.models.sources import resolve_path

    cfg = full_precision(model_cfg, device)
    base, tokenizer, _ = load_base(cfg)
    model = load_adapter(base, adapter_dir).merge_and_unload()
    if getattr(model.config, "_attn_implementation", None) == PACKED_ATTENTION:
        model.set_attn_implementation("sdpa")  # a saved config must name an attention every loader knows
    return model, tokenizer, resolve_path(cfg.name_or_path)


def ensure_chat_template(tokenizer: Any) -> bool:
    """Give a tokenizer without a chat template securefed's text chat format (the one the run trained
    on for such bases, data.templates.render_chat). True when it was added."""
    from securefed.data.chat import has_chat_template
    from securefed.data.templates import CHAT_JINJA

    if has_chat_template(tokenizer):
        return False
    tokenizer.chat_template = CHAT_JINJA
    return True


def save_merged(model: Any, tokenizer: Any, out: Path, dtype: torch.dtype) -> None:
    """Write the merged checkpoint, tokenizer and chat template into the (temporary) folder `out`."""
    if dtype not in DTYPES.values():
        raise UserError(f"--dtype {dtype}: choose one of {', '.join(DTYPES)}")
    model.to(dtype)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
