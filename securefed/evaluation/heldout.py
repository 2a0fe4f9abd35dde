"""`securefed eval --run DIR`: score a run's adapter on the held-out rows of the run's own config.

The run directory holds the resolved config (config.json), so the same seed gives the same TEST rows
(data.test_fraction) the simulation scored and no party trained on; the model, prompt rendering (chat
template or text template) and metrics are the simulation's own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from securefed.errors import UserError


def evaluate_run(run_dir: str | Path, adapter: str | Path | None = None, split: str = "auto",
                 device: str | None = None) -> dict[str, Any]:
    """Metrics of `adapter` (default RUN/adapter) on the run's held-out split ("auto": TEST when the run
    has one, else its eval split)."""
    from safetensors.torch import load_file

    from securefed.config import load_config
    from securefed.data.chat import render_loaded
    from securefed.models.loading import attach_lora, fit_max_length, load_base
    from securefed.simulation.world import build_evalset
    from securefed.training.tasks import task_functions

    run = Path(run_dir)
    if not (run / "config.json").is_file():
        raise UserError(f"--run {run}: no config.json there (not a run directory)")
    cfg = load_config(run / "config.json", [f"model.device={device}"] if device else [])
    path = Path(adapter) if adapter is not None else run / "adapter"
    weights = path / "adapter_model.safetensors"
    if not weights.is_file():
        hint = " (a Local run: pass --adapter RUN/local-adapters/<party>)" if (run / "local-adapters").is_dir() else ""
        raise UserError(f"{path}: no adapter_model.safetensors{hint}")
    fns = task_functions(cfg)
    base, tokenizer, dev = load_base(cfg.model)
    model = attach_lora(base, cfg.lora, seed=cfg.seed)
    data = render_loaded(fns.load(cfg.data, seed=cfg.seed), tokenizer, cfg.data.prompt_style)
    evalset = build_evalset(fns, data, tokenizer, cfg, fit_max_length(base, cfg.training.max_length), split)
    ev = cfg.evaluation
    metrics = fns.evaluate(model, tokenizer, load_file(str(weights)), evalset, dev, ev.batch_size, ev.max_new_tokens)
    return {"run": str(run), "adapter": str(path), "split": evalset.split, "n": len(evalset.examples), "metrics": metrics}
