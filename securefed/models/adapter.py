"""Adapter state: exactly peft's adapter state dict, the payload that travels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch

from securefed.aggregate import TensorDict


def get_adapter_state(model: Any) -> TensorDict:
    """A detached float32 CPU copy of the LoRA weights, keyed as peft saves them."""
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().to("cpu", torch.float32).clone() for k, v in get_peft_model_state_dict(model).items()}


def set_adapter_state(model: Any, state: Mapping[str, torch.Tensor]) -> None:
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

    current = get_peft_model_state_dict(model)
    if set(current) != set(state):
        raise ValueError("adapter state keys do not match the model's LoRA layout")
    result = set_peft_model_state_dict(model, dict(state))
    unexpected = getattr(result, "unexpected_keys", None) or []
    if unexpected:
        raise ValueError(f"unexpected adapter keys: {unexpected[:3]}")


def adapter_params(model: Any) -> dict[str, torch.nn.Parameter]:
    """Trainable LoRA parameters keyed like the adapter state dict (peft drops the adapter name)."""
    name = getattr(model, "active_adapter", "default")
    name = name if isinstance(name, str) else name[0]
    out = {n.replace(f".{name}.", "."): p for n, p in model.named_parameters() if p.requires_grad}
    return out


def save_adapter(model: Any, params: Mapping[str, torch.Tensor], out: str | Path, config_json: str) -> None:
    """Write `params` in PEFT format (loadable with PeftModel.from_pretrained) with the resolved
    securefed config beside it; the directory appears atomically."""
    from securefed.atomic import atomic_directory
    from securefed.models.sources import base_identity

    set_adapter_state(model, params)
    base = base_identity(json.loads(config_json)["model"]["name_or_path"])
    with atomic_directory(out) as tmp:
        model.save_pretrained(tmp)
        # peft records where the base was loaded from (a cache path on this machine): record a name
        # that means something elsewhere, and the base's hash beside it (base_model.json).
        peft_config = tmp / "adapter_config.json"
        fields = json.loads(peft_config.read_text(encoding="utf-8"))
        fields["base_model_name_or_path"] = base["name"]
        peft_config.write_text(json.dumps(fields, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        (tmp / "base_model.json").write_text(json.dumps(base, indent=2) + "\n", encoding="utf-8")
        (tmp / "securefed_config.json").write_text(config_json, encoding="utf-8")
