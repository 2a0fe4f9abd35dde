"""Deployment transport throughput on loopback: a coordinator and N party processes (protocol-only
apps), for N in --parties. Prints rounds/s (steady state, round 0 excluded: it includes everyone
connecting), bytes per round, training-phase and per-stage latency.

    .venv/bin/python benchmarks/throughput.py --parties 10 50 --rounds 5 --vector-len 4096

Every process runs on this machine, so the figures measure the transport and the coordinator's
scheduling under CPU contention, not a network. Loopback (127.0.0.1) only.
"""

from __future__ import annotations

import argparse
import json
import tempfile

from securefed.deploy.localrun import run_local_federation

COLUMNS = [
    ("parties", "parties"), ("rounds_ok", "rounds"), ("min_contributors", "min contrib"),
    ("wall_s", "wall s"), ("first_round_s", "round0 s"), ("steady_rounds_per_s", "rounds/s"),
    ("bytes_in_per_round", "B in/round"), ("bytes_out_per_round", "B out/round"),
    ("train_phase_s_median", "train s (med)"), ("stage_s_median", "stage s (med)"), ("stage_s_max", "stage s (max)"),
]


def print_table(rows: list[dict], columns: list[tuple[str, str]]) -> None:
    """One header line and one line per run, `|`-separated, in `columns` (key, heading) order."""
    print(" | ".join(h for _, h in columns))
    for fig in rows:
        print(" | ".join(str(fig[k]) for k, _ in columns))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parties", type=int, nargs="+", default=[10, 50])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--vector-len", type=int, default=4096)
    ap.add_argument("--protocol", default="plain")
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--json", action="store_true", help="print one JSON object per run instead of a table")
    args = ap.parse_args()
    rows = []
    for n in args.parties:
        with tempfile.TemporaryDirectory(prefix=f"securefed-bench-{n}-") as tmp:
            run = run_local_federation(tmp, n, rounds=args.rounds, vector_len=args.vector_len,
                                       protocol=args.protocol, timeout_s=args.timeout)
            fig = {"protocol": args.protocol, "vector_len": args.vector_len, **run.figures(),
                   "server_rc": run.server_rc, "failed_parties": sum(rc != 0 for rc in run.party_rcs.values())}
        rows.append(fig)
        if args.json:
            print(json.dumps(fig), flush=True)
    if not args.json:
        print(f"protocol={args.protocol} vector_len={args.vector_len} rounds={args.rounds}")
        print_table(rows, COLUMNS)


if __name__ == "__main__":
    main()
