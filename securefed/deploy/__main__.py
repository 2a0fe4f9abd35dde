"""`python -m securefed.deploy server|client DIR ...`: the protocol-only apps as real processes.

For tests, the load test and the benchmark; the `securefed` CLI wires the real apps."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from securefed.deploy.coordinator import RoundFailed, run_server
from securefed.deploy.party import run_client
from securefed.deploy.protocol_only import ProtocolOnlyClientApp, ProtocolOnlyServerApp, crash_hook


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m securefed.deploy")
    sub = ap.add_subparsers(dest="role", required=True)
    s = sub.add_parser("server")
    s.add_argument("dir")
    s.add_argument("--bind")
    s.add_argument("--state")
    c = sub.add_parser("client")
    c.add_argument("dir")
    c.add_argument("--address")
    c.add_argument("--final", help="write the final payload here")
    c.add_argument("--crash-round", type=int)
    c.add_argument("--crash-call", type=int, default=1)
    ap.add_argument("--log-level", default="INFO")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s")
    if args.role == "server":
        try:
            summary = run_server(args.dir, ProtocolOnlyServerApp, bind=args.bind, state_dir=args.state)
        except RoundFailed as e:  # the federation stops; one line, as `securefed server` says it
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(json.dumps({"rounds_completed": summary.rounds_completed, "resumed_after": summary.resumed_after}))
        return 0
    hook = crash_hook(args.crash_round, args.crash_call) if args.crash_round is not None else None
    result = run_client(args.dir, lambda fed, pid: ProtocolOnlyClientApp(fed, pid, args.final),
                        address=args.address, session_hook=hook)
    print(json.dumps({"party": result.party_id, "rounds": result.rounds_completed, "final": result.final_received}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
