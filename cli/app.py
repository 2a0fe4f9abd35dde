"""The `securefed` command line (typer). User errors print one line and exit 2; bugs keep tracebacks."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from securefed.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="securefed: privacy-first federated fine-tuning of LLM adapters.")
err = Console(stderr=True)


def _fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


@app.command()
def simulate(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML config file"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="run directory (default runs/<algorithm>-<protocol>)"),
    set_: List[str] = typer.Option([], "--set", "-s", help="override: dotted.key=value (repeatable)"),
    resume: Optional[Path] = typer.Option(None, "--resume", help="continue the run in this directory"),
) -> None:
    """Simulate a federation on this machine (all parties in one process)."""
    from securefed.config import load_config
    from securefed.simulation.report import print_summary
    from securefed.simulation.runner import simulate as run

    try:
        if resume is not None:
            saved = resume / "config.json"
            if not saved.is_file():
                raise UserError(f"--resume {resume}: no config.json there (not a run directory)")
            cfg = load_config(saved, set_)
            out_dir = resume
        else:
            cfg = load_config(config, set_)
            out_dir = out or Path("runs") / f"{cfg.algorithm.name}-{cfg.aggregation.protocol}"
        summary = run(cfg, out_dir, resume=resume is not None, console=err)
    except UserError as e:
        _fail(str(e))
    print_summary(summary, out_dir, Console())


@app.command("eval")
def eval_(
    model: str = typer.Option("default", "--model", "-m", help="base model: 'default', local dir or hub id"),
    adapter: Optional[Path] = typer.Option(None, "--adapter", "-a", help="PEFT adapter dir (e.g. runs/x/adapter)"),
    task: str = typer.Option(..., "--task", "-t", help="classification, multiple_choice, math, code, "
                             "harmlessness, preference, perplexity"),
    data: Path = typer.Option(..., "--data", "-d", help="JSONL/JSON/CSV rows"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="write eval_<task>.json and eval.md here"),
    limit: Optional[int] = typer.Option(None, help="first N rows only"),
    batch_size: int = typer.Option(8, "--batch-size"),
    device: str = typer.Option("auto", help="auto, cpu or cuda"),
    option: List[str] = typer.Option([], "--option", help="task option key=value (repeatable), "
                                     "e.g. text_field=Headline"),
) -> None:
    """Evaluate a base model (+ adapter) on one task; prints the metrics and a markdown line."""
    import json

    from securefed.config import parse_override
    from securefed.evaluation.runner import evaluate
    from securefed.models.config import ModelConfig
    from securefed.models.loading import load_base, load_adapter

    try:
        options = {}
        for item in option:
            key, value = parse_override(item)
            options[".".join(key)] = value
        base, tokenizer, _ = load_base(ModelConfig(name_or_path=model, device=device))  # type: ignore[arg-type]
        net = load_adapter(base, adapter) if adapter is not None else base
        result = evaluate(task, net, tokenizer, data, out_dir=out, limit=limit, batch_size=batch_size, **options)
    except UserError as e:
        _fail(str(e))
    Console().print_json(json.dumps(result["metrics"]))
    Console().print(result["summary"], highlight=False)


@app.command("make-tiny-model")
def make_tiny_model(
    out: Path = typer.Argument(..., help="directory to write the model and tokenizer to"),
    arch: str = typer.Option("llama", help="llama, gpt2 or qwen2"),
    seed: int = typer.Option(0),
) -> None:
    """Write a tiny random-init model + locally built tokenizer (for tests and offline demos)."""
    from securefed.models.tiny import save_tiny

    if arch not in ("llama", "gpt2", "qwen2"):
        _fail(f"--arch {arch!r}: choose llama, gpt2 or qwen2")
    path = save_tiny(out, arch, seed=seed)  # type: ignore[arg-type]
    Console().print(f"wrote {arch} tiny model to {path}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
