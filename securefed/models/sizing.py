"""How large a run's adapter is, from the base's config alone: no weight is read.

`securefed provision` sizes the federation's message limit from the adapter. Loading a 7B base for
that took minutes and gigabytes; instead the model is built on PyTorch's meta device (shapes, no
storage) from its config.json (or a GGUF file's metadata) and wrapped by the same peft code that
training uses (models.loading.wrap_lora), so the targeted layers and their shapes are peft's own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from securefed.errors import ModelError
from securefed.models.config import LoraConfig, ModelConfig
from securefed.models.sources import first_line


def base_config(cfg: ModelConfig) -> Any:
    """The base's transformers config without its weights (a GGUF file: its metadata only)."""
    from transformers import AutoConfig

    name = cfg.name_or_path
    try:
        if name.lower().endswith(".gguf"):
            file = Path(name).expanduser()
            if not file.is_file():
                raise ModelError(f"model.name_or_path {name!r}: no such GGUF file")
            return AutoConfig.from_pretrained(str(file.parent), gguf_file=file.name)
        if name == "default":
            from securefed.models.sources import resolve_path

            name = resolve_path(name)  # the embedded tiny model (built once, a few kB)
        return AutoConfig.from_pretrained(name, trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError, KeyError) as e:
        raise ModelError(f"cannot read the config of model {name!r}: {first_line(e)}") from e


def adapter_numel(model_cfg: ModelConfig, lora_cfg: LoraConfig) -> int:
    """Number of values in the adapter state dict (what a party's update carries per vector)."""
    from peft.utils import get_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    from securefed.models.loading import wrap_lora

    config = base_config(model_cfg)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=model_cfg.trust_remote_code)
    return sum(t.numel() for t in get_peft_model_state_dict(wrap_lora(model, lora_cfg)).values())
