"""`python -m benchmarks.real_llm`: see the package docstring."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from rich.console import Console

import benchmarks.real_llm as package
from benchmarks.llm_efficiency import SHARED_DATA as _DATA
from benchmarks.llm_efficiency import default_model
from benchmarks.real_llm.dpo import run_dpo
from benchmarks.real_llm.report import (
    DPO_COLUMNS,
    SFT_COLUMNS,
    collect,
    headline_entries,
    merge,
    plot,
    plot_curves,
    table,
    update_headline,
)
from benchmarks.real_llm.rescore import plot_rescore, rescore, rescore_table
from benchmarks.real_llm.sft import PRESET_FLAGS, PRESETS, run_sft
from securefed.atomic import atomic_write_text


def main() -> None:
    ap = argparse.ArgumentParser(description=package.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    ap.add_argument("--model", default=default_model())
    ap.add_argument("--data", default=str(_DATA / "financial_phrasebank" / "all-data.csv"))
    ap.add_argument("--hh", default=str(_DATA / "hh-rlhf" / "harmless-base-test.jsonl.gz"))
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--parties", type=int, default=10)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default="", help="comma list of SFT run names (zero-shot always runs)")
    ap.add_argument("--set", action="append", default=[], help="extra config override (repeatable)")
    ap.add_argument("--skip-sft", action="store_true")
    ap.add_argument("--skip-dpo", action="store_true")
    ap.add_argument("--skip-zero-shot", action="store_true", help="(to split the SFT runs over processes)")
    ap.add_argument("--dpo-protocols", default="plain,secagg")
    ap.add_argument("--tag", default="", help='appended to SFT run names, e.g. "4-bit" with --set model.quantization=4bit')
    for k, kind in PRESET_FLAGS.items():  # override one value of the preset (the centralized row follows)
        ap.add_argument("--" + k.replace("_", "-"), type=kind, default=None, help=f"preset's {k}")
    ap.add_argument("--out", default="bench-out/real_llm")
    ap.add_argument("--resume", action="store_true",
                    help="continue: finished runs in OUT/runs are read back, stopped ones resume from their checkpoint")
    ap.add_argument("--stop-after", type=int, default=None, metavar="K",
                    help="stop each run once K rounds are complete, as a kill would (its checkpoint kept)")
    ap.add_argument("--headline", metavar="JSON", help="also update this machine-readable summary (one entry per run)")
    ap.add_argument("--merge", nargs="+", metavar="DIR", help="merge the results.json of these runs into --out")
    ap.add_argument("--report", action="store_true",
                    help="train nothing: one table, plots and --headline from every finished run under --out")
    ap.add_argument("--rescore", action="store_true",
                    help="train nothing: score every finished run's final adapter (--only: those runs) and the "
                         "base model on ALL held-out TEST rows; OUT/rescore.md, then --report")
    args = ap.parse_args()
    if args.merge:
        return merge(args.merge, Path(args.out))
    if args.rescore:
        return rescore_all(Path(args.out), args.only, args.headline)
    if args.report:
        return report(Path(args.out), args.headline)
    p = {**PRESETS[args.preset], **{k: v for k, v in ((k, getattr(args, k)) for k in PRESET_FLAGS) if v is not None}}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    args.console = Console(stderr=True)
    log = _logger((out / "progress.log").open("a", encoding="utf-8"), args.console)

    result: dict = {"meta": {"preset": args.preset, **p, "model": args.model, "parties": args.parties,
                             "alpha": args.alpha, "seed": args.seed, "extra": args.set}}
    md = [f"# Real LLM: {Path(args.model).name}, preset {args.preset}\n"]
    if not args.skip_sft:
        rows = run_sft(args, p, out, log)
        result["sft"] = rows
        md += ["## Financial PhraseBank (held-out TEST rows)\n",
               table(rows, SFT_COLUMNS), ""]
        plot(rows, out / "utility.png", f"FPB, {args.parties} parties, Dirichlet({args.alpha}), held-out test")
        plot_curves(rows, out / "curves.png", f"FPB, {args.parties} parties, Dirichlet({args.alpha}), by round")
        if args.headline:
            update_headline(Path(args.headline), headline_entries(rows), _command())
    if not args.skip_dpo:
        rows = run_dpo(args, p, out, log)
        result["dpo"] = rows
        md += ["## Federated DPO, HH-RLHF harmless-base (held-out TEST pairs)\n",
               table(rows, DPO_COLUMNS)]
    (out / "results.json").write_text(json.dumps(result, indent=2))
    (out / "results.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


def report(out: Path, headline: str | None) -> None:
    """Every finished run of OUT (runs that took several invocations or sessions) in one table
    (OUT/report.md), OUT/report-utility.png and OUT/report-curves.png; --headline entries keep the
    command that trained them."""
    rows = collect(out)
    if not rows:
        raise SystemExit(f"--report: no finished run under {out}")
    md = table(rows, SFT_COLUMNS)
    (out / "report.md").write_text(md + "\n")
    plot(rows, out / "report-utility.png", "FPB, held-out test rows (every finished run)")
    plot_curves(rows, out / "report-curves.png", "FPB, held-out test rows, by round (every finished run)")
    if headline:
        update_headline(Path(headline), headline_entries(rows), _command(), keep_commands=True)
    print(md)


def rescore_all(out: Path, only: str, headline: str | None) -> None:
    """--rescore: the all-TEST table (OUT/rescore.md, OUT/rescore.json, OUT/rescore.png), then --report,
    whose rows and --headline entries carry each run's all-TEST figures (`all_test`)."""
    with (out / "progress.log").open("a", encoding="utf-8") as logfile:
        rows = rescore(out, [n for n in only.split(",") if n], _logger(logfile, Console(stderr=True)))
    md = rescore_table(rows)
    atomic_write_text(out / "rescore.md", md + "\n")
    atomic_write_text(out / "rescore.json", json.dumps(rows, indent=2) + "\n")
    plot_rescore(rows, out / "rescore.png")
    print(md)
    report(out, headline)


def _logger(logfile, console: Console):
    """One JSON line a row, on the terminal and appended to OUT/progress.log (flushed: a kill loses none)."""

    def log(row: dict) -> None:
        line = json.dumps({"time": time.strftime("%H:%M:%S"), **row})
        console.print(line, highlight=False, soft_wrap=True)
        logfile.write(line + "\n")
        logfile.flush()

    return log


def _command() -> str:
    return "python -m benchmarks.real_llm " + shlex.join(sys.argv[1:])


if __name__ == "__main__":
    main()
