"""Load a base causal LM + tokenizer (local directory or hub id), freeze it, attach LoRA with peft."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from securefed.errors import ModelError
from securefed.models.config import LoraConfig, ModelConfig
from securefed.models.packed_attention import use_packed_attention
from securefed.models.quantization import (bnb_config, detach_from_checkpoint, prepare_for_training,
                                          prequantized_directory)
from securefed.models.sources import check_local_dir, first_line, fit_max_length, resolve_path  # noqa: F401 (re-export)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("model.device is 'cuda' but no CUDA device is available")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        # bf16 halves memory on GPUs that support it; CPUs train tiny models faster and exactly in fp32.
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def load_base(cfg: ModelConfig) -> tuple[Any, Any, torch.device]:
    """(model, tokenizer, device). The model is frozen (requires_grad False) and in eval mode; with
    model.quantization its linear weights are bitsandbytes 4/8-bit (loaded straight onto the device)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_path(cfg.name_or_path)
    check_local_dir(path)
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    quant = bnb_config(cfg.quantization, compute_dtype=dtype)
    extra: dict[str, Any] = {} if quant is None else {"quantization_config": quant, "device_map": {"": device}}
    weights = path
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=cfg.trust_remote_code)
        if quant is not None and device.type == "cpu":  # saved 4/8-bit weights: no full-precision read
            # at every load (CPU only: a GPU load quantizes on the device, from a bf16 read)
            weights = prequantized_directory(path, cfg.quantization, dtype, cfg.trust_remote_code) or path
            if weights != path:
                extra = {"device_map": {"": device}}  # the saved config carries the quantization
        model = AutoModelForCausalLM.from_pretrained(weights, dtype=dtype, trust_remote_code=cfg.trust_remote_code,
                                                     **extra)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load model {path!r} (local directory or hub id): {first_line(e)}") from e
    if tokenizer.pad_token is None:
        # Many causal LMs ship without a pad token; padding positions are masked out of the loss anyway.
        tokenizer.pad_token = tokenizer.eos_token
    for p in model.parameters():
        p.requires_grad_(False)
    # Packed rows (training.packing) attend per example instead of through a dense N x N mask; every
    # other input runs transformers' SDPA unchanged (see models.packed_attention).
    use_packed_attention(model)
    if quant is None:
        model.to(device)  # bitsandbytes models are placed by device_map and refuse .to()
    elif weights == path:  # quantized at load: drop the full-precision file it read (the saved 4-bit
        detach_from_checkpoint(model)  # file stays mapped: it holds the weights themselves)
    model.eval()
    return model, tokenizer, device


def attach_lora(model: Any, cfg: LoraConfig, seed: int = 0, gradient_checkpointing: bool = False) -> Any:
    """Wrap with a peft LoRA adapter; only the LoRA matrices are trainable. A quantized base goes
    through peft's k-bit preparation first (see models.quantization)."""
    quantized = bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False))
    model = prepare_for_training(model, quantized, gradient_checkpointing)
    for p in model.parameters():
        p.requires_grad_(False)  # k-bit preparation may re-enable some; only LoRA trains

    torch.manual_seed(seed)  # LoRA A init is random: same seed, same initial global adapter
    return wrap_lora(model, cfg)


def wrap_lora(model: Any, cfg: LoraConfig) -> Any:
    """peft's LoRA wrapper for `cfg` (its per-architecture target defaults when none are given)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    peft_cfg = PeftLoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                              target_modules=cfg.target_modules, task_type="CAUSAL_LM")
    try:
        return get_peft_model(model, peft_cfg)
    except ValueError as e:
        raise ModelError(f"lora.target_modules: {e}") from e


def load_adapter(base: Any, adapter_dir: str | Path) -> Any:
    """A saved PEFT adapter on top of `base` (for evaluation)."""
    from peft import PeftModel

    path = Path(adapter_dir)
    if not (path / "adapter_config.json").is_file():
        raise ModelError(f"--adapter {str(path)!r}: not a PEFT adapter directory (adapter_config.json missing)")
    try:
        return PeftModel.from_pretrained(base, str(path))
    except (OSError, ValueError, RuntimeError) as e:
        raise ModelError(f"cannot load adapter {str(path)!r} onto this base model: {e}") from e
