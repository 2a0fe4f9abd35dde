"""Benchmark the `he` protocol against `plain` (and `secagg` when registered): time to encrypt /
sum / decrypt, and bytes per parameter, for several vector sizes and CKKS parameter sets.

    python benchmarks/he.py                 # 1e5, 1e6, 8.4M (2**23), 1e7 parameters; n4096 and n8192
    python benchmarks/he.py --quick         # tiny sizes, a few seconds
    python benchmarks/he.py --out he.json   # also write the rows as JSON

Sizes count adapter coordinates m (no SCAFFOLD control). Times are one party's encryption, the
server's whole input stage (load + validate + add for all parties, serialize the sum), one party's
decryption, and the server's unpacking; all single-threaded, in process.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import numpy as np

from securefed.protocols import registry
from securefed.protocols.base import PartyInput, RoundContext
from securefed.protocols.driver import run_round
from securefed.protocols.he import HE, HEConfig

FP32 = 4


def bench_he(preset: str, m: int, pids: tuple[str, ...], inputs: dict[str, PartyInput]) -> dict:
    he = HE(HEConfig(preset=preset))
    t0 = time.perf_counter()
    public, parties = he.provision(pids)
    t_prov = time.perf_counter() - t0
    ctx = RoundContext("bench", 1, pids, m, False, 100)
    server = he.server(ctx, public)
    sessions = {p: he.party(ctx, p, inputs[p], parties[p]) for p in pids}
    replies, enc_times = {}, []
    for pid, msg in server.start().items():
        t0 = time.perf_counter()
        replies[pid] = sessions[pid].handle(msg)
        enc_times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    outbound = server.step(replies)
    t_sum = time.perf_counter() - t0
    (dec_pid, request), = outbound.items()
    t0 = time.perf_counter()
    reply = sessions[dec_pid].handle(request)
    t_dec = time.perf_counter() - t0
    t0 = time.perf_counter()
    server.step({dec_pid: reply})
    t_unpack = time.perf_counter() - t0
    result = server.result()
    up = len(replies[pids[0]].payload)
    return {
        "protocol": "he", "params": preset, "m": m, "parties": len(pids),
        "provision_s": t_prov, "encrypt_s": float(np.median(enc_times)), "sum_s": t_sum,
        "decrypt_s": t_dec, "unpack_s": t_unpack,
        "upload_bytes": up, "bytes_per_param": up / m, "x_fp32": up / (FP32 * m),
        "download_bytes_decryptor": len(request.payload), "result_bytes": len(reply.payload),
        "ciphertexts": result.stats["ciphertexts_per_party"], "values_per_slot": result.stats["values_per_slot"],
        "ckks_err_bound_q": public.error_bound, "ckks_err_measured_q": public.measured_error,
        "_result": result,
    }


def bench_generic(name: str, m: int, pids: tuple[str, ...], inputs: dict[str, PartyInput]) -> dict:
    proto = registry.create(name)
    server_material, party_material = proto.provision(pids)
    ctx = RoundContext("bench", 1, pids, m, False, 100)
    t0 = time.perf_counter()
    result, traffic = run_round(proto, ctx, inputs, server_material, party_material)
    total = time.perf_counter() - t0
    up = traffic.sent[pids[0]]
    return {
        "protocol": name, "params": "-", "m": m, "parties": len(pids), "round_s": total, "upload_bytes": up, "bytes_per_param": up / m, "x_fp32": up / (FP32 * m),
        "_result": result,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes")
    ap.add_argument("--sizes", type=float, nargs="*", help="parameter counts (default 1e5 1e6 2**23 1e7)")
    ap.add_argument("--params", nargs="*", default=["n4096", "n8192"], help="he presets")
    ap.add_argument("--parties", type=int, default=3)
    ap.add_argument("--out", help="write rows as JSON here")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in (args.sizes or ([10_000, 100_000] if args.quick else [1e5, 1e6, 2**23, 1e7]))]
    pids = tuple(f"p{i}" for i in range(args.parties))
    try:
        registry.create("secagg")
        others = ["plain", "secagg"]
    except Exception as e:  # not in this checkout yet, or failing: skip, say so
        print(f"secagg skipped: {type(e).__name__}: {e}", file=sys.stderr)
        others = ["plain"]
    rows = []
    rng = np.random.default_rng(0)
    for m in sizes:
        base = (rng.standard_normal(m) * 0.02).astype(np.float32)
        inputs = {p: PartyInput(np.roll(base, i), None, float(10 + i)) for i, p in enumerate(pids)}
        ref = None
        for name in others:
            try:
                row = bench_generic(name, m, pids, inputs)
            except Exception as e:
                print(f"{name} m={m} skipped: {type(e).__name__}: {e}", file=sys.stderr)
                continue
            ref = row.pop("_result") if name == "plain" else ref
            row.pop("_result", None)
            rows.append(row)
        for preset in args.params:
            row = bench_he(preset, m, pids, inputs)
            res = row.pop("_result")
            if ref is not None:
                row["max_abs_err_vs_plain"] = float(np.max(np.abs(res.delta_sum - ref.delta_sum)))
                row["err_bound"] = res.stats["error_bound"]["delta_sum"]
                if row["max_abs_err_vs_plain"] > row["err_bound"] * (1 + 1e-9):
                    raise SystemExit(f"he result outside its error bound: {row}")
            rows.append(row)
            print_row(row)
    print()
    print_table(rows)
    if args.out:
        meta = {"python": sys.version.split()[0], "machine": platform.machine(), "parties": args.parties}
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)
    return 0


def print_row(r: dict) -> None:
    print(f"  {r['protocol']:6} {r['params']:6} m={r['m']:>9,}  enc {r['encrypt_s']:.3f}s", file=sys.stderr)


def print_table(rows: list[dict]) -> None:
    head = f"{'protocol':8} {'params':6} {'m':>10} {'B/param':>8} {'x fp32':>7} {'encrypt s':>9} {'sum s':>7} {'decrypt s':>9} {'unpack s':>8} {'round s':>7}"
    print(head)
    print("-" * len(head))
    for r in rows:
        def f(k, w, p=3):
            return f"{r[k]:>{w}.{p}f}" if k in r else f"{'-':>{w}}"
        print(f"{r['protocol']:8} {r['params']:6} {r['m']:>10,} {f('bytes_per_param', 8, 2)} {f('x_fp32', 7, 2)} "
              f"{f('encrypt_s', 9)} {f('sum_s', 7)} {f('decrypt_s', 9)} {f('unpack_s', 8)} {f('round_s', 7)}")


if __name__ == "__main__":
    raise SystemExit(main())
