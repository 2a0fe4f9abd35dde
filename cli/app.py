"""The `securefed` command line (typer). User errors print one line and exit 2; bugs keep tracebacks."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from securefed.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="securefed: privacy-first federated fine-tuning of LLM adapters.")
err = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            Console().print(f"securefed {version('securefed')}", highlight=False)
        except PackageNotFoundError:  # pragma: no cover - run from a source tree that is not installed
            Console().print("securefed (not installed: no version metadata)")
        raise typer.Exit()


@app.callback()
def _quiet_libraries(
    _show_version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="print the version and exit"),
) -> None:
    """Our own progress bars and tables say what happens; silence third-party bars and deprecations."""
    import logging
    import warnings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)
    # peft imports bitsandbytes when it is installed (securefed[quant]); on CPUs with AVX512-BF16 its
    # import logs a warning about an optional hub-downloaded kernel we never use (it falls back).
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover - transformers is a hard dependency
        pass


def _fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


@app.command()
def simulate(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML config file"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="run directory (default runs/<algorithm>-<protocol>)"),
    set_: List[str] = typer.Option([], "--set", "-s", help="override: dotted.key=value (repeatable)"),
    resume: Optional[Path] = typer.Option(None, "--resume", help="continue the run in this directory"),
    backend: Optional[str] = typer.Option(None, "--backend", help="inprocess or ray (simulation.backend)"),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster to join, e.g. auto "
                                          "(simulation.ray.address; default: start a local Ray)"),
) -> None:
    """Simulate a federation on this machine (all parties in one process) or on a Ray cluster."""
    from securefed.config import load_config
    from securefed.simulation.report import print_summary
    from securefed.simulation.runner import simulate as run

    if backend is not None:
        set_ = [*set_, f"simulation.backend={backend!r}"]
    if address is not None:
        set_ = [*set_, f"simulation.ray.address={address!r}"]
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
        try:
            summary = run(cfg, out_dir, resume=resume is not None, console=err)
        except KeyboardInterrupt:
            _interrupted(out_dir)
    except UserError as e:
        _fail(str(e))
    print_summary(summary, out_dir, Console())


def _interrupted(out_dir: Path) -> None:
    """Ctrl-C during a simulation: say whether (and how) it can go on. Checkpoints are written whole
    after each round (atomic), so the last completed round is always resumable."""
    import json

    latest = out_dir / "checkpoints" / "LATEST"
    if latest.is_file():
        done = ""
        with contextlib.suppress(OSError, ValueError):
            rows = (out_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
            done = f" after round {json.loads(rows[-1])['round']}" if rows else ""
        err.print(f"interrupted; resume with: securefed simulate --resume {out_dir} (continues{done})", highlight=False)
    else:
        err.print("interrupted before the first round finished: nothing to resume; run the command again",
                  highlight=False)
    raise typer.Exit(code=130)


@app.command("eval")
def eval_(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="base model: 'default' (the default), "
                                        "local dir or hub id"),
    adapter: Optional[Path] = typer.Option(None, "--adapter", "-a", help="PEFT adapter dir (e.g. runs/x/adapter)"),
    task: Optional[str] = typer.Option(None, "--task", "-t", help="classification, multiple_choice, math, code, "
                                       "harmlessness, preference, perplexity"),
    data: Optional[Path] = typer.Option(None, "--data", "-d", help="JSONL/JSON/CSV rows"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="write eval_<task>.json and eval.md here"),
    limit: Optional[int] = typer.Option(None, help="first N rows only (with --run: at most N held-out rows, "
                                        "the run's own seeded sample)"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="default 8 (with --run: the run's)"),
    device: str = typer.Option("auto", help="auto, cpu or cuda"),
    option: List[str] = typer.Option([], "--option", help="task option key=value (repeatable), "
                                     "e.g. text_field=Headline"),
    run: Optional[Path] = typer.Option(None, "--run", help="a simulation run dir: score its adapter (or --adapter) "
                                       "on the run's held-out TEST split with its own model and prompts"),
    split: str = typer.Option("auto", "--split", help="with --run: auto (test if the run has one), test, eval"),
    judge_url: Optional[str] = typer.Option(None, "--judge-url", help="LLM-as-judge: an OpenAI-compatible API "
                                            "base, e.g. http://127.0.0.1:8000/v1 (grades --run or --model)"),
    judge_model: Optional[str] = typer.Option(None, "--judge-model", help="the judge's model name"),
    against: Optional[Path] = typer.Option(None, "--against", help="with --judge-url: pairwise against this run"),
    questions: Optional[Path] = typer.Option(None, "--questions", help="with --judge-url: JSONL questions "
                                             "(default: the built-in MT-Bench-style set)"),
    judge_timeout: float = typer.Option(120.0, "--judge-timeout", help="seconds per judge reply"),
) -> None:
    """Evaluate a base model (+ adapter) on one task, or a run's adapter on its held-out split (--run),
    or grade its answers with an LLM judge (--judge-url)."""
    import json

    if judge_url is not None:
        from securefed.cli.judge import run_judge

        try:
            if not judge_model:
                raise UserError("--judge-url needs --judge-model NAME")
            target = run if run is not None else Path(model)
            result = run_judge(target, judge_url, judge_model, against=against, questions=questions, out=out,
                               limit=limit, adapter=adapter, device=device, timeout=judge_timeout,
                               max_new_tokens=256, err=err)
        except UserError as e:
            _fail(str(e))
        Console().print_json(json.dumps(result["summary"]))
        return

    if run is not None:
        from securefed.evaluation.heldout import evaluate_run

        try:
            if split not in ("auto", "test", "eval"):
                raise UserError(f"--split {split!r}: choose auto, test or eval")
            given = [name for name, v in (("--data", data), ("--model", model), ("--option", option)) if v]
            if given:
                raise UserError(f"{', '.join(given)}: with --run the run's own data and model are scored; "
                                "drop them, or leave out --run to score a file")
            held = evaluate_run(run, adapter, split, None if device == "auto" else device, limit=limit, task=task,
                                batch_size=batch_size, out_dir=out)
        except UserError as e:
            _fail(str(e))
        Console().print_json(json.dumps(held))
        if out is not None:
            err.print(f"wrote {out / 'eval_heldout.json'} and a line in {out / 'eval.md'}", highlight=False)
        return
    if task is None or data is None:
        _fail("give --task and --data (or --run DIR to score a run on its held-out split)")

    from securefed.config import parse_override
    from securefed.evaluation.runner import evaluate
    from securefed.models.config import ModelConfig
    from securefed.models.loading import load_base, load_adapter

    try:
        options = {}
        for item in option:
            key, value = parse_override(item)
            options[".".join(key)] = value
        base, tokenizer, _ = load_base(ModelConfig(name_or_path=model or "default", device=device))  # type: ignore[arg-type]
        net = load_adapter(base, adapter) if adapter is not None else base
        result = evaluate(task, net, tokenizer, data, out_dir=out, limit=limit, batch_size=batch_size or 8, **options)
    except UserError as e:
        _fail(str(e))
    if result["preset"]:
        err.print(f"data preset {result['preset']!r} (inferred from the columns of {data.name}): "
                  f"text_field={result['options']['text_field']!r}, label_field={result['options']['label_field']!r}",
                  highlight=False)
    Console().print_json(json.dumps(result["metrics"]))
    Console().print(result["summary"], highlight=False)


@app.command()
def report(
    runs: List[Path] = typer.Argument(..., help="run directories (each with metrics.jsonl)"),
    out: Path = typer.Option(..., "--out", "-o", help="folder for the PNGs, report.md and report.html"),
) -> None:
    """Plot loss, accuracy/F1, epsilon and bytes per round of one or more runs; a table and a page."""
    from securefed.reporting.report import write_report

    try:
        written = write_report(runs, out)
    except UserError as e:
        _fail(str(e))
    Console().print(f"wrote {len(written['figures'])} figures, {written['markdown']} and {written['html']}",
                    highlight=False)


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


from securefed.cli import deploy as _deploy  # noqa: E402  (provision, keygen, server, client, status)
from securefed.cli import export as _export  # noqa: E402  (export, generate, chat, serve)
from securefed.cli.init import init  # noqa: E402  (a command in its own module)

_deploy.register(app, _fail, err)
_export.register(app, _fail, err)
app.command()(init)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
