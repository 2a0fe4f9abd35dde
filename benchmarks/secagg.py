"""Benchmark secagg against plain, side by side in one run.

    .venv/bin/python -m benchmarks.secagg --out results/secagg.json          # default sizes
    .venv/bin/python -m benchmarks.secagg --quick --out /tmp/secagg.json     # seconds
    .venv/bin/python -m benchmarks.secagg --baseline e16acd3 --out /tmp/side.json  # vs an older commit

For each (n, m, graph) it runs one full round of secagg and one of plain through the in-process
driver, timing every party's `handle` and the server's `step`, and counting bytes on the wire.
Reported: mean client seconds per party (all stages), server seconds, upload bytes per party, and
the ratios secagg / plain and secagg / fp32 (4 bytes per coordinate). Separately: the time for one
party to encode and mask an 8.4M-coordinate update (the masked-input stage's work) with the
neighbour count of a 1000-party sparse round. With --baseline REV, only that stage runs, for older
commits (loaded from git) and this tree alternately in one process, at rings of 29, 32 and 33 bits.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from securefed.protocols import registry
from securefed.protocols.base import Message, PartyInput, RoundContext
from securefed.protocols.driver import run_round
from securefed.protocols.encoding import FixedPointCodec, pack_bits
from securefed.protocols.secagg import SecAggConfig
from securefed.protocols.secagg.primitives import MaskAccumulator, prg_reader

MAX_WEIGHT = 64


class _Timed:
    """Wraps a protocol so every session call is timed: seconds per party (client) and server."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.name = inner, inner.name
        self.client: dict[str, float] = {}
        self.server_s = 0.0

    def provision(self, party_ids: tuple[str, ...]) -> Any:
        return self.inner.provision(party_ids)

    def party(self, ctx: RoundContext, pid: str, data: PartyInput, material: Any) -> Any:
        session, outer = self.inner.party(ctx, pid, data, material), self

        class Party:
            def handle(self, message: Message) -> Message | None:
                t = time.perf_counter()
                try:
                    return session.handle(message)
                finally:
                    outer.client[pid] = outer.client.get(pid, 0.0) + time.perf_counter() - t

        return Party()

    def server(self, ctx: RoundContext, material: Any) -> Any:
        session, outer = self.inner.server(ctx, material), self

        class Server:
            done = property(lambda self: session.done)

            def start(self) -> dict[str, Message]:
                return self._timed(session.start)

            def step(self, replies: Mapping[str, Message]) -> dict[str, Message]:
                return self._timed(lambda: session.step(replies))

            def result(self) -> Any:
                return session.result()

            def _timed(self, fn: Any) -> Any:
                t = time.perf_counter()
                try:
                    return fn()
                finally:
                    outer.server_s += time.perf_counter() - t

        return Server()


def _inputs(n: int, m: int, seed: int) -> tuple[RoundContext, dict[str, PartyInput]]:
    # benchmark data only: numpy's generator is fine here (no keys or masks come from it)
    gen = np.random.default_rng(seed)
    ids = tuple(f"party-{i:04d}" for i in range(n))
    ctx = RoundContext("bench", 1, ids, m, False, MAX_WEIGHT)
    inputs = {
        pid: PartyInput((gen.standard_normal(m, dtype=np.float32) * 0.05), None, float(gen.integers(1, MAX_WEIGHT)))
        for pid in ids
    }
    return ctx, inputs


def _one(name: str, config: Any, ctx: RoundContext, inputs: Mapping[str, PartyInput]) -> dict[str, Any]:
    proto = _Timed(registry.create(name, config))
    server_material, party_material = proto.provision(ctx.party_ids)
    t = time.perf_counter()
    result, traffic = run_round(proto, ctx, inputs, server_material, party_material)
    wall = time.perf_counter() - t
    n, m = len(ctx.party_ids), ctx.vector_len
    upload = statistics.mean(traffic.sent.values())
    return {
        "protocol": name, "n": n, "m": m,
        "client_s_mean": statistics.mean(proto.client.values()), "client_s_max": max(proto.client.values()),
        "server_s": proto.server_s, "round_wall_s": wall,
        "upload_bytes_per_party": upload, "download_bytes_per_party": statistics.mean(traffic.received.values()),
        "upload_vs_fp32": upload / (4 * (m + 1)),
        "stats": {k: v for k, v in result.stats.items() if k != "dropped"},
    }


def compare(n: int, m: int, graph: str, seed: int = 0) -> dict[str, Any]:
    ctx, inputs = _inputs(n, m, seed)
    cfg = SecAggConfig(graph=graph, precision_bits=12, max_parties=max(n, 3))
    sec = _one("secagg", cfg, ctx, inputs)
    plain = _one("plain", None, ctx, inputs)
    sec["graph"] = sec["stats"].get("graph")
    sec["vs_plain"] = {
        "client_time": sec["client_s_mean"] / plain["client_s_mean"],
        "server_time": sec["server_s"] / plain["server_s"],
        "upload_bytes": sec["upload_bytes_per_party"] / plain["upload_bytes_per_party"],
    }
    return {"secagg": sec, "plain": plain}


def mask_time(m: int, neighbours: int, n_parties: int, repeats: int, precision_bits: int = 12) -> dict[str, Any]:
    """One party's masked-input work on an m-vector: encode (clip, weight, stochastic rounding),
    add the self mask and `neighbours` pairwise masks, pack at b bits. At n = 1000 parties and
    MAX_WEIGHT = 64, precision 12 gives a 29-bit ring (uint32 path) and the default 16 a 33-bit one
    (the split 32 + 8 bit path)."""
    codec = FixedPointCodec.for_round(n_parties, m, False, MAX_WEIGHT, 1.0, 1.0, precision_bits)
    x = np.random.default_rng(1).standard_normal(m, dtype=np.float32) * 0.05
    times, encode_times = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        encoded = codec.encode(x, None, 17.0, prg_reader(os.urandom(32)))
        t1 = time.perf_counter()
        acc = MaskAccumulator(encoded, codec.bits, copy=False)
        acc.add_masks([(os.urandom(32), 1 if j % 2 else -1) for j in range(neighbours + 1)])
        packed = acc.packed()
        t2 = time.perf_counter()
        times.append(t2 - t0)
        encode_times.append(t1 - t0)
    return {
        "m": m, "neighbours": neighbours, "n_parties": n_parties, "precision_bits": precision_bits,
        "bits": codec.bits, "repeats": repeats,
        "encode_mask_pack_s_median": statistics.median(times),
        "encode_s_median": statistics.median(encode_times),
        "upload_vs_fp32": len(packed) / (4 * m),
    }


def _load_revision(rev: str) -> tuple[Any, Any]:
    """(encoding, primitives) modules of an older commit, from `git show`, loaded beside the current
    ones so both can be timed alternately in one process."""
    import subprocess
    import types

    def load(path: str, name: str, replace: tuple[str, str] = ("", "")) -> Any:
        src = subprocess.run(["git", "show", f"{rev}:{path}"], check=True, capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parents[1]).stdout
        module = sys.modules[name] = types.ModuleType(name)  # dataclasses look their module up here
        exec(compile(src.replace(*replace), f"{rev}:{path}", "exec"), module.__dict__)  # noqa: S102 (our own history)
        return module

    enc = load("protocols/encoding.py", f"encoding_{rev}")
    prim = load("protocols/secagg/primitives.py", f"primitives_{rev}",
                ("from securefed.protocols.encoding import ring_dtype", f"from encoding_{rev} import ring_dtype"))
    return enc, prim


def side_by_side(revs: list[str], m: int, repeats: int) -> list[dict[str, Any]]:
    """The masked-input stage (k = 16, n = 1000, MAX_WEIGHT 64) of older commits and of this tree,
    run alternately `repeats` times at precision 12, 15 and 16 (rings of 29, 32 and 33 bits)."""
    from securefed.protocols import encoding as enc_now
    from securefed.protocols.secagg import primitives as prim_now

    impls = {rev: _load_revision(rev) for rev in revs} | {"now": (enc_now, prim_now)}
    x = np.random.default_rng(1).standard_normal(m, dtype=np.float32) * 0.05
    rows = []
    for p in (12, 15, 16):
        times: dict[str, list[float]] = {name: [] for name in impls}
        for _ in range(repeats):
            for name, (enc, prim) in impls.items():
                codec = enc.FixedPointCodec.for_round(1000, m, False, MAX_WEIGHT, 1.0, 1.0, p)
                keys = [(os.urandom(32), 1 if j % 2 else -1) for j in range(17)]
                t0 = time.perf_counter()
                acc = prim.MaskAccumulator(codec.encode(x, None, 17.0, prim.prg_reader(os.urandom(32))),
                                           codec.bits, copy=False)
                if hasattr(acc, "add_masks"):
                    acc.add_masks(keys)
                    data = acc.packed()
                else:  # older commits: one pass per key, then pack_bits
                    for key, sign in keys:
                        acc.add_mask(key, sign)
                    data = enc.pack_bits(acc.result(), codec.bits)
                times[name].append(time.perf_counter() - t0)
        for name, ts in times.items():
            rows.append({"impl": name, "precision_bits": p, "bits": codec.bits, "min_s": min(ts),
                         "median_s": statistics.median(ts), "upload_vs_fp32": len(data) / (4 * m)})
            print(f"p={p:2d} b={codec.bits} {name:8s} min {min(ts):.3f} s  median {statistics.median(ts):.3f} s  "
                  f"upload {len(data) / (4 * m):.4f}x fp32", flush=True)
    return rows


def _table(rows: list[dict[str, Any]]) -> str:
    head = (f"{'graph':9} {'n':>5} {'m':>9} {'k':>3} {'t':>3} {'b':>3} {'client s':>9} {'server s':>9} "
            f"{'up/party':>11} {'vs fp32':>7} {'client x':>8} {'server x':>8} {'bytes x':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        s = r["secagg"]
        st, vp = s["stats"], s["vs_plain"]
        lines.append(
            f"{s['graph']:9} {s['n']:>5} {s['m']:>9} {st['neighbours']:>3} {st['threshold']:>3} {st['bits']:>3} "
            f"{s['client_s_mean']:>9.4f} {s['server_s']:>9.3f} {s['upload_bytes_per_party']:>11.0f} "
            f"{s['upload_vs_fp32']:>7.3f} {vp['client_time']:>8.1f} {vp['server_time']:>8.1f} {vp['upload_bytes']:>7.3f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke run")
    parser.add_argument("--out", type=Path, default=Path("bench-out/secagg.json"), help="JSON results file")
    parser.add_argument("--mask-m", type=int, default=8_400_000, help="vector length for the masking figure")
    parser.add_argument("--baseline", action="append", default=[], metavar="REV",
                        help="also time this commit's masked-input stage alternately with the current one "
                             "(repeatable; e.g. e16acd3 for v1); only this comparison runs")
    args = parser.parse_args()
    if args.baseline:
        rows = side_by_side(args.baseline, 100_000 if args.quick else args.mask_m, 2 if args.quick else 7)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"load_average": os.getloadavg(), "side_by_side": rows}, indent=1))
        return

    if args.quick:
        grid = [(10, 1_000, "auto"), (30, 1_000, "sparse"), (30, 1_000, "complete"), (10, 10_000, "auto")]
        masks = [mask_time(100_000, 16, 1000, 2, p) for p in (12, 16)]
    else:
        grid = [(10, 100_000, "auto"), (100, 100_000, "sparse"), (100, 100_000, "complete"),
                (1000, 100_000, "sparse"), (10, 1_000_000, "auto"), (10, 10_000_000, "auto")]
        masks = [mask_time(args.mask_m, 16, 1000, 3, p) for p in (12, 16)]
    rows = []
    for n, m, graph in grid:
        rows.append(compare(n, m, graph))
        print(f"done n={n} m={m} graph={graph}: round {rows[-1]['secagg']['round_wall_s']:.2f}s", flush=True)
    report = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
              "masking": masks, "rounds": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(_table(rows))
    for mask in masks:
        print(f"\nmask {mask['m']:,} coords, {mask['neighbours']} neighbours + self mask, n={mask['n_parties']}, "
              f"b={mask['bits']}: {mask['encode_mask_pack_s_median']:.3f} s (encode {mask['encode_s_median']:.3f} s), "
              f"upload {mask['upload_vs_fp32']:.3f}x fp32")
    print("ratios 'x' are secagg / plain measured in this run; plain uploads float32 plus a 24-byte header.")


if __name__ == "__main__":
    main()
