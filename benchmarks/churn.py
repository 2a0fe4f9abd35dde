"""Churn at scale on loopback: a coordinator and N party processes (protocol-only apps) run R rounds
while `--kill` of the parties are killed every round at a random protocol stage (before upload, after
upload, during unmasking or decryption) and restarted. Prints rounds completed, contributors per
round, whether every completed round's sum equals its contributors' inputs within the quantisation
bound, coordinator and per-party memory, wall time per round, and any unhandled exception.

    .venv/bin/python -m benchmarks.churn --parties 30 100 --rounds 10 --protocol secagg
    .venv/bin/python -m benchmarks.churn --parties 30 --rounds 10 --protocol he --json --keep runs/churn

Protocol-agnostic: the stage count comes from securefed.deploy.churn.STAGES. Everything runs on this
machine: with few cores, round times measure CPU contention as much as the protocol.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from benchmarks.throughput import print_table
from securefed.deploy.churn import run_churn

COLUMNS = [("protocol", "protocol"), ("parties", "parties"), ("rounds_completed", "rounds ok"), ("rounds_rejected", "rejected"),
           ("attempts", "attempts"), ("kills", "kills"), ("contributors_per_round", "contributors/round"),
           ("round_s", "s/round"), ("sums_within_bound", "sums ok"), ("coordinator_rss_mib", "coord MiB"),
           ("party_rss_mib_median", "party RSS MiB"), ("party_pss_mib_median", "party PSS MiB"),
           ("unhandled_exceptions", "tracebacks"), ("odd_exits", "odd exits"), ("wall_s", "wall s")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parties", type=int, nargs="+", default=[30])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--kill", type=float, default=0.2, help="fraction of the parties killed every round")
    ap.add_argument("--protocol", default="secagg")
    ap.add_argument("--vector-len", type=int, default=64)
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="one JSON object per run instead of a table")
    ap.add_argument("--keep", type=Path, default=None, metavar="DIR",
                    help="keep each run's federation (coordinator and party logs, metrics) in DIR/<parties>")
    args = ap.parse_args()
    rows = []
    for n in args.parties:
        with tempfile.TemporaryDirectory(prefix=f"securefed-churn-{n}-") as tmp:
            root = tmp if args.keep is None else args.keep / str(n)
            if args.keep is not None and root.exists():
                raise SystemExit(f"--keep: {root} exists; give an empty directory")
            run = run_churn(root, n, rounds=args.rounds, kill_fraction=args.kill, protocol=args.protocol,
                            vector_len=args.vector_len, seed=args.seed, timeout_s=args.timeout)
            fig = {**run.figures(), "vector_len": args.vector_len, "tracebacks_in": run.tracebacks,
                   "odd_exit_list": run.odd_exits}
        rows.append(fig)
        if args.json:
            print(json.dumps(fig), flush=True)
    if not args.json:
        print(f"rounds={args.rounds} kill={args.kill} vector_len={args.vector_len}")
        print_table(rows, COLUMNS)


if __name__ == "__main__":
    main()
