"""`securefed eval --run DIR`: score a run's adapter on the held-out rows of the run's own config.

The run directory holds the resolved config (config.json), so the same seed gives the same TEST rows
(data.test_fraction) the simulation scored and no party trained on; the model, prompt rendering (chat
template or text template) and metrics are the simulation's own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from securefed.errors import UserError


def run_task(cfg: Any, labelled: bool) -> str:
    """The `securefed eval --task` name of what a run scores on its held-out rows."""
    return "preference" if cfg.task == "dpo" else "classification" if labelled else "perplexity"


def evaluate_run(run_dir: str | Path, adapter: str | Path | None = None, split: str = "auto",
                 device: str | None = None, *, limit: int | None = None, task: str | None = None,
                 batch_size: int | None = None, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Metrics of `adapter` (default RUN/adapter) on the run's held-out split ("auto": TEST when the run
    has one, else its eval split). limit: at most N rows (the run's own seeded sample of the split, as
    evaluation.max_examples draws it); task: must be the run's own task (refused otherwise, never
    ignored); out_dir: also write OUT/eval_heldout.json and append a line to OUT/eval.md."""
    from safetensors.torch import load_file

    from securefed.config import load_config
    from securefed.data.chat import render_loaded
    from securefed.evaluation.report import append_line_atomic, summary_line, write_json_atomic
    from securefed.models.loading import attach_lora, fit_max_length, load_base
    from securefed.simulation.world import build_evalset
    from securefed.training.tasks import task_functions

    run = Path(run_dir)
    if not (run / "config.json").is_file():
        raise UserError(f"--run {run}: no config.json there (not a run directory)")
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be >= 1, got {limit}")
    overrides = [f"model.device={device}"] if device else []
    overrides += [f"evaluation.max_examples={limit}"] if limit is not None else []
    overrides += [f"evaluation.batch_size={batch_size}"] if batch_size is not None else []
    cfg = load_config(run / "config.json", overrides)
    path = Path(adapter) if adapter is not None else run / "adapter"
    weights = path / "adapter_model.safetensors"
    if not weights.is_file():
        hint = " (a Local run: pass --adapter RUN/local-adapters/<party>)" if (run / "local-adapters").is_dir() else ""
        raise UserError(f"{path}: no adapter_model.safetensors{hint}")
    fns = task_functions(cfg)
    loaded = fns.load(cfg.data, seed=cfg.seed)
    own = run_task(cfg, bool(getattr(loaded, "labels", None)))
    if task is not None and task != own:
        raise UserError(f"--task {task}: run {run} is scored as {own!r} on its held-out rows; drop --task, or "
                        f"score the adapter on a file with --adapter {path} --task {task} --data FILE")
    base, tokenizer, dev = load_base(cfg.model)
    model = attach_lora(base, cfg.lora, seed=cfg.seed)
    data = render_loaded(loaded, tokenizer, cfg.data.prompt_style)
    evalset = build_evalset(fns, data, tokenizer, cfg, fit_max_length(base, cfg.training.max_length), split)
    ev = cfg.evaluation
    metrics = fns.evaluate(model, tokenizer, load_file(str(weights)), evalset, dev, ev.batch_size, ev.max_new_tokens)
    which = evalset.split
    result = {"run": str(run), "adapter": str(path), "task": own, "split": which, "n": len(evalset.examples),
              "metrics": metrics}
    if out_dir is not None:
        out = Path(out_dir)
        write_json_atomic(out / "eval_heldout.json", result)
        line = summary_line(f"{own} ({which} split of {run.name})", {**metrics, "n": len(evalset.examples)},
                            [k for k in metrics])
        append_line_atomic(out / "eval.md", line)
    return result
