"""Load a model for inference from any of the places securefed leaves one.

- an export with --merge (or any Hugging Face model folder): config.json with a model_type
- an export without --merge: adapter files + securefed_config.json naming the base
- a run directory: config.json (securefed's) + adapter/ (or --adapter)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from securefed.errors import UserError


@dataclass
class Loaded:
    model: Any
    tokenizer: Any  # always with a chat template (securefed's text format when the base has none)
    device: Any
    source: str  # what was loaded, for messages


def _hf_config(folder: Path) -> dict[str, Any] | None:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return config if isinstance(config, dict) and "model_type" in config else None


def load_for_inference(where: str | Path, adapter: str | Path | None = None, device: str = "auto") -> Loaded:
    from securefed.config import load_config
    from securefed.export.merge import ensure_chat_template
    from securefed.export.run import open_run
    from securefed.models.config import ModelConfig
    from securefed.models.loading import load_adapter, load_base

    folder = Path(where)
    if str(where) == "default" or str(where).lower().endswith(".gguf") or _hf_config(folder) is not None:
        # a base by name (the embedded model, a GGUF file), a merged export or a plain model folder
        model, tokenizer, dev = load_base(ModelConfig(name_or_path=str(where), device=device))  # type: ignore[arg-type]
        source = f"model {where}"
        if adapter is not None:
            model, source = load_adapter(model, adapter), f"{source} + adapter {adapter}"
    elif not folder.is_dir():
        raise UserError(f"{folder}: no such run or model folder")
    else:
        if (folder / "adapter_config.json").is_file() and (folder / "securefed_config.json").is_file():
            cfg, adapter_dir = load_config(folder / "securefed_config.json"), Path(adapter or folder)
        else:
            run = open_run(folder, adapter)
            cfg, adapter_dir = run.config, run.adapter_dir
        base, tokenizer, dev = load_base(cfg.model.model_copy(update={"device": device}))
        model = load_adapter(base, adapter_dir)
        source = f"{cfg.model.name_or_path} + adapter {adapter_dir}"
    ensure_chat_template(tokenizer)
    model.eval()
    return Loaded(model, tokenizer, dev, source)
