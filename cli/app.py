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


@app.callback()
def _quiet_libraries() -> None:
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
        summary = run(cfg, out_dir, resume=resume is not None, console=err)
    except UserError as e:
        _fail(str(e))
    print_summary(summary, out_dir, Console())


@app.command("eval")
def eval_(
    model: str = typer.Option("default", "--model", "-m", help="base model: 'default', local dir or hub id"),
    adapter: Optional[Path] = typer.Option(None, "--adapter", "-a", help="PEFT adapter dir (e.g. runs/x/adapter)"),
    task: Optional[str] = typer.Option(None, "--task", "-t", help="classification, multiple_choice, math, code, "
                                       "harmlessness, preference, perplexity"),
    data: Optional[Path] = typer.Option(None, "--data", "-d", help="JSONL/JSON/CSV rows"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="write eval_<task>.json and eval.md here"),
    limit: Optional[int] = typer.Option(None, help="first N rows only"),
    batch_size: int = typer.Option(8, "--batch-size"),
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
            held = evaluate_run(run, adapter, split, None if device == "auto" else device)
        except UserError as e:
            _fail(str(e))
        Console().print_json(json.dumps(held))
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
        base, tokenizer, _ = load_base(ModelConfig(name_or_path=model, device=device))  # type: ignore[arg-type]
        net = load_adapter(base, adapter) if adapter is not None else base
        result = evaluate(task, net, tokenizer, data, out_dir=out, limit=limit, batch_size=batch_size, **options)
    except UserError as e:
        _fail(str(e))
    Console().print_json(json.dumps(result["metrics"]))
    Console().print(result["summary"], highlight=False)


@app.command()
def provision(
    parties: str = typer.Option(..., "--parties", help="comma-separated party ids, e.g. hospital-a,bank-c"),
    server_host: str = typer.Option(..., "--server-host", help="host name or IP the parties dial"),
    out: Path = typer.Option(..., "--out", "-o", help="new folder for the kits"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML config of the federation"),
    set_: List[str] = typer.Option([], "--set", "-s", help="override: dotted.key=value (repeatable)"),
    port: int = typer.Option(7443, help="coordinator port"),
    max_weight: int = typer.Option(4096, "--max-weight", help="public bound on a party's sample weight"),
    min_parties: Optional[int] = typer.Option(None, "--min-parties", help="quorum per round (default: all)"),
    request: List[Path] = typer.Option([], "--request", "-r",
                                       help="a party's request folder from `securefed keygen` (repeat per party)"),
    local_keys: bool = typer.Option(False, "--local-keys",
                                    help="make every party's keys on this machine (testing only)"),
) -> None:
    """Create a federation from the parties' key requests: CA, signed certificates, pinned public keys,
    one public kit per party (to copy next to its keys) and the server's."""
    from securefed.config import load_config
    from securefed.deploy.fl_apps import provision_fl_federation
    from securefed.deploy.keygen import request_party

    try:
        cfg = load_config(config, set_)
        ids = [p.strip() for p in parties.split(",") if p.strip()]
        if bool(request) == local_keys:
            raise UserError("give each party's --request folder (made by `securefed keygen` on its machine), "
                            "or --local-keys to make every party's keys here (testing only)")
        requests = {request_party(d): d for d in request} if request else None
        paths = provision_fl_federation(out, ids, server_host, cfg, port=port, max_weight=max_weight,
                                        min_parties=min_parties, requests=requests)
    except (UserError, ValueError) as e:
        _fail(str(e))
    Console().print(f"federation {paths.config.federation_id} written to {out}: hand each party its folder "
                    f"({', '.join(sorted(paths.party_dirs))}); keep {paths.ca_dir} offline; "
                    f"run the coordinator from {paths.server_dir}")


@app.command()
def keygen(
    party: str = typer.Option(..., "--party", help="this party's id, as the operator will list it"),
    out: Path = typer.Option(..., "--out", "-o", help="new folder for this party's keys (stays on this machine)"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="the federation's TOML config (protocol)"),
    set_: List[str] = typer.Option([], "--set", "-s", help="override: dotted.key=value (repeatable)"),
    finish: Optional[Path] = typer.Option(None, "--finish", help="two-phase protocols: the operator's roster.json"),
) -> None:
    """On a party's machine: make its TLS key, certificate request and protocol keys. Only
    <out>/request goes to the operator; copy the kit it sends back into <out>."""
    from securefed.config import load_config
    from securefed.deploy.fl_apps import keygen_fl_finish, keygen_fl_party

    try:
        cfg = load_config(config, set_)
        req = keygen_fl_finish(out, finish, cfg) if finish is not None else keygen_fl_party(out, party, cfg)
        from securefed.deploy.roster import request_fingerprint

        fp = request_fingerprint(req, cfg.aggregation.protocol)
    except (UserError, ValueError) as e:
        _fail(str(e))
    Console().print(f"{party}: keys in {out} (keep them there); hand {req} to the operator\n"
                    f"{party}: key fingerprint {fp} (read it to the other parties out of band)", highlight=False)


@app.command()
def server(
    federation: Path = typer.Option(..., "--federation", "-f", help="the server folder from provision"),
    bind: Optional[str] = typer.Option(None, help="listen address (default server_host:port)"),
) -> None:
    """Run the coordinator: waits for a quorum, runs the rounds, checkpoints after each."""
    from securefed.deploy.coordinator import RoundFailed, run_server
    from securefed.deploy.fl_apps import FLServerApp

    _logging()
    try:
        from securefed.deploy.settings import load_federation

        rounds = load_federation(federation / "federation.json").rounds
        with _round_progress(rounds, "coordinator", federation) as advance:
            summary = run_server(federation, lambda fed: FLServerApp(fed, out_dir=federation), bind=bind,
                                 on_round=lambda record: advance(_round_text(record)))
    except (UserError, RoundFailed) as e:
        _fail(str(e))
    Console().print(f"federation finished: {summary.rounds_completed} rounds; adapter in {federation / 'adapter'}")


@app.command()
def client(
    kit: Path = typer.Option(..., "--kit", "-k", help="this party's folder from provision"),
    data: str = typer.Option(..., "--data", "-d", help="this party's private data (file, dir or hub id)"),
    address: Optional[str] = typer.Option(None, help="coordinator address (default from the kit)"),
) -> None:
    """Take part in a federation as one party; the data never leaves this machine."""
    from securefed.deploy.fl_apps import FLClientApp
    from securefed.deploy.party import run_client
    from securefed.transport.client import TransportError

    _logging()
    try:
        from securefed.deploy.settings import load_federation

        rounds = load_federation(kit / "federation.json").rounds
        apps: list[FLClientApp] = []

        def make_app(fed, pid):
            apps.append(FLClientApp(fed, pid, data, kit))
            return apps[-1]

        with _round_progress(rounds, kit.name, kit) as advance:
            summary = run_client(kit, make_app, address=address, on_round=lambda r: advance(f"round {r + 1} aggregated"))
    except (UserError, TransportError) as e:
        _fail(str(e))
    dp = ""
    if apps and apps[-1].privacy.example:
        p = apps[-1].cfg.privacy
        dp = f"; example-level DP epsilon {apps[-1].privacy.epsilon():.3g} (delta {p.target_delta:g})"
    Console().print(f"{summary.party_id}: {summary.rounds_completed} rounds; final adapter in "
                    f"{kit / 'final-adapter'}{dp}")


@app.command()
def status(
    federation: Path = typer.Option(..., "--federation", "-f", help="the server folder or a party kit"),
    address: Optional[str] = typer.Option(None),
    roster: bool = typer.Option(False, "--roster", help="list every party's key fingerprint from the folder "
                                "(and whether it matches pinned-fingerprints.txt); contacts no one"),
) -> None:
    """Show the coordinator's round, connected parties and bytes moved (or, --roster, the fingerprints)."""
    import json

    from securefed.deploy.status import fetch_status
    from securefed.transport.client import TransportError

    if roster:
        from securefed.deploy.roster import roster_lines

        try:
            print("\n".join(roster_lines(federation)))
        except UserError as e:
            _fail(str(e))
        return
    try:
        info = fetch_status(federation, address=address)
    except (UserError, TransportError) as e:
        _fail(str(e))
    Console().print_json(json.dumps(info))


def _round_text(record: dict) -> str:
    """The coordinator's run.log line of a finished round; names a party the protocol left out."""
    text = f"round {record['round'] + 1}: {len(record['contributors'])} contributors"
    if record.get("excluded"):
        text += f"; left out {', '.join(record['excluded'])} (its answers did not decode)"
    return text


@contextlib.contextmanager
def _round_progress(rounds: int, who: str, folder: Path):
    """Completed rounds: a rich bar on a terminal (stderr, beside the structured logs), a line per
    round otherwise; always appended to FOLDER/run.log."""
    from securefed.progress import RunProgress

    with RunProgress(err, folder / "run.log", rounds) as progress:
        task = progress.add_task(f"{who} waiting for the first round", total=rounds)
        yield lambda text: progress.update(task, advance=1, description=f"{who} {text}")


def _logging() -> None:
    import logging

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s")


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


from securefed.cli import export as _export  # noqa: E402  (export, generate, chat, serve)

_export.register(app, _fail, err)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
