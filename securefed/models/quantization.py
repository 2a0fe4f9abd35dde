"""QLoRA-style memory savings for the frozen base: bitsandbytes 4-bit (NF4 + double quantization) or
8-bit (LLM.int8) weights, and gradient checkpointing.

Only the LoRA matrices train and travel (`models.adapter` reads peft's adapter state dict, fp32), so
the federated protocols, DP and aggregation never see a quantized tensor: a party with a 4-bit base and
one with a bf16 base exchange updates of the same layout.
"""

from __future__ import annotations

from typing import Any

import torch

from securefed.errors import ModelError


def bnb_config(quantization: str, compute_dtype: torch.dtype) -> Any:
    """transformers' BitsAndBytesConfig for "4bit"/"8bit"; None for "none"."""
    if quantization == "none":
        return None
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ModelError(f"model.quantization {quantization!r} needs the optional package bitsandbytes: "
                         "pip install 'securefed[quant]'") from None
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    # NF4 is information-theoretically matched to normally distributed weights; double quantization
    # also quantizes the per-block scales (~0.4 bit/param saved), the QLoRA recipe.
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype)


def prepare_for_training(model: Any, quantized: bool, gradient_checkpointing: bool) -> Any:
    """Before attaching LoRA. k-bit bases go through peft's preparation (norms and head upcast to fp32
    for stable training, input grads enabled so checkpointed segments get a graph); full-precision
    bases only switch on checkpointing when asked."""
    if quantized:
        from peft import prepare_model_for_kbit_training

        return prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    if gradient_checkpointing:
        # Recompute each block's activations in backward: memory O(layers) -> O(1) blocks, ~30% more compute.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    return model


def release_freed_memory() -> None:
    """Hand the heap's free pages back to the OS (glibc malloc_trim; a no-op elsewhere). Quantizing at
    load time reads each full-precision tensor, quantizes it and frees it, but glibc keeps the freed
    arenas mapped, so without this a 4-bit process stays as large as the full-precision one."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        trim = getattr(libc, "malloc_trim", None)
    except OSError:
        return
    if trim is not None:
        trim(0)
