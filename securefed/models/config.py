"""The `model.*` and `lora.*` sections of the root config."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name_or_path: str = Field(
        "default",
        description="'default' (the embedded tiny Llama), a local directory, a .gguf file, or a hub id",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda if present
    trust_remote_code: bool = False
    # bitsandbytes: "4bit" = NF4 + double quantization (QLoRA), "8bit" = LLM.int8; the LoRA stays fp32
    quantization: Literal["none", "4bit", "8bit"] = "none"


class LoraConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    r: int = Field(8, ge=1, le=1024)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    # None: peft's per-architecture defaults (Llama/Mistral/Qwen q_proj,v_proj; GPT-2 c_attn; ...)
    target_modules: list[str] | Literal["all-linear"] | None = None
