"""Benchmark threshold he's NTT: the numpy passes (protocols/he/ntt.py) and the numba kernels
(protocols/he/kernels.py) side by side in one process, single-threaded.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.ntt                  # N = 8192, PRIMES_8192
    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.ntt --quick          # a few seconds
    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.ntt --out ntt.json   # also the rows as JSON
    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.ntt --party 8388608  # + one party's encryption

Rows: one forward and one inverse transform of a ring element (L = 7 primes x N words); per
ciphertext, a threshold party's encryption (scheme.encrypt_each: a_tau from AES-CTR reduced mod p,
its product with s, 1 inverse transform, noise and message), a decryptor's answer among 10
(scheme.answer_each: the same plus flooding and 9 pairwise masks, each reduced mod p), and the
server's decode (crt.decode_digits, non-strict so both paths do every step); each the
median of interleaved repetitions (numpy, compiled, numpy, ...: load on the shared machine falls
on both alike). Then the kernels' first-call cost in fresh processes: with an empty on-disk cache
(compile) and with the cache filled (load), as a fresh CI process pays it. With --party M: one
threshold party's whole input stage (encode, encrypt, pack) for M parameters, numpy and compiled
alternating in fresh processes (SECUREFED_HE_KERNELS=numpy for the former), 3 times each, each
process warmed up by a small input stage first.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from securefed.protocols.base import PartyInput, RoundContext
from securefed.protocols.he import HE, HEConfig, crt, rlwe
from securefed.protocols.he.threshold import scheme
from securefed.protocols.he.ring import PRIMES_8192, Ring

_FIRST_CALL = """
import time
t0 = time.perf_counter()
import numpy as np
from securefed.protocols.he.ring import Ring, PRIMES_8192
ring = Ring(8192, PRIMES_8192); ring._tables
t1 = time.perf_counter()
plan = ring._plan
x = np.zeros((ring.size, ring.n), np.uint32)
plan.forward(x); plan.inverse(x)
print(time.perf_counter() - t1, t1 - t0, plan._kernels is not None)
"""


def _rings(n: int) -> tuple[Ring, Ring]:
    """Two rings alike but for their NTT plan: the numpy passes, the compiled kernels."""
    os.environ["SECUREFED_HE_KERNELS"] = "numpy"
    try:
        slow = Ring(n, PRIMES_8192)
        slow._plan  # built now, under the switch
    finally:
        del os.environ["SECUREFED_HE_KERNELS"]
    fast = Ring(n, PRIMES_8192)
    if fast._plan._kernels is None or slow._plan._kernels is not None:
        raise SystemExit("numba is not importable here: nothing to compare")
    return slow, fast


def _side_by_side(name: str, fns: dict, reps: int, per: int = 1) -> dict:
    """Median seconds per call of each fn over `reps` interleaved rounds (`per` items each)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for f in fns.values():
        f()  # warm-up: compile / load the kernels, fault the scratch in
    for _ in range(reps):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append((time.perf_counter() - t0) / per)
    row = {"op": name, **{f"{k}_ms": statistics.median(v) * 1e3 for k, v in times.items()}}
    row["ratio"] = row["numpy_ms"] / row["compiled_ms"]
    return row


def first_call() -> dict:
    """Seconds to the end of the first forward + inverse in a fresh process, cold and warm cache."""
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, OMP_NUM_THREADS="1")
        for label in ("cold_cache", "warm_cache"):
            res = subprocess.run([sys.executable, "-c", _FIRST_CALL], env=env, capture_output=True, text=True,
                                 check=True)
            first, imports, compiled = res.stdout.split()
            if compiled != "True":
                raise SystemExit("the fresh process did not load the kernels")
            out[label] = float(first)
            out["import_s"] = float(imports)
    return out


def party_encrypt(m: int) -> float:
    """Seconds of one threshold party's input stage for m parameters (3 parties, this process)."""
    pids = ("p0", "p1", "p2")
    he = HE(HEConfig())
    public, parties = he.provision(pids)
    ctx = RoundContext("bench", 1, pids, m, False, 100)
    delta = (np.random.default_rng(0).standard_normal(m) * 0.02).astype(np.float32)
    session = he.party(ctx, "p0", PartyInput(delta, None, 10.0), parties["p0"])
    start = he.server(ctx, public).start()["p0"]
    t0 = time.perf_counter()
    session.handle(start)
    return time.perf_counter() - t0


def party_side_by_side(m: int, reps: int = 3) -> dict:
    """party_encrypt in fresh processes, numpy and compiled alternating; medians and the ratio."""
    times: dict[str, list[float]] = {"numpy": [], "compiled": []}
    for _ in range(reps):
        for path in times:
            env = dict(os.environ, OMP_NUM_THREADS="1")
            env.pop("SECUREFED_HE_KERNELS", None)
            if path == "numpy":
                env["SECUREFED_HE_KERNELS"] = "numpy"
            res = subprocess.run([sys.executable, "-m", "benchmarks.ntt", "--party-once", str(m)], env=env,
                                 capture_output=True, text=True, check=True)
            times[path].append(float(res.stdout.split()[-1]))
    row = {"op": f"party encrypt m={m}", **{f"{k}_ms": statistics.median(v) * 1e3 for k, v in times.items()}}
    row["ratio"] = row["numpy_ms"] / row["compiled_ms"]
    row["runs_s"] = times
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--n", type=int, default=8192, help="ring degree (PRIMES_8192 serve N <= 8192)")
    ap.add_argument("--out", help="write rows as JSON here")
    ap.add_argument("--party", type=int, help="also time one threshold party's input stage at this size")
    ap.add_argument("--party-once", type=int, help=argparse.SUPPRESS)  # a --party child process
    args = ap.parse_args(argv)
    if args.party_once:
        party_encrypt(10_000)  # warm-up: load the kernels (their first-call cost is reported apart)
        print(party_encrypt(args.party_once))
        return 0
    rlwe.THREADS = 1
    reps, n_ct = (5, 4) if args.quick else (41, 16)
    slow, fast = _rings(args.n)
    rng = np.random.default_rng(0)
    x = (rng.integers(0, 2**63, (slow.size, slow.n), dtype=np.uint64) % slow._p).astype(np.uint32)
    bufs = {"numpy": x.copy(), "compiled": x.copy()}
    rows = [
        _side_by_side("forward", {k: (lambda r=r, b=bufs[k]: r._plan.forward(b)) for k, r in
                                  (("numpy", slow), ("compiled", fast))}, reps),
        _side_by_side("inverse", {k: (lambda r=r, b=bufs[k]: r._plan.inverse(b)) for k, r in
                                  (("numpy", slow), ("compiled", fast))}, reps),
    ]
    s_ntt, seed = fast.uniform(os.urandom), os.urandom(32)
    msg = fast.uniform(os.urandom, (n_ct,))
    masks = [(i % 2 == 0, os.urandom(32)) for i in range(9)]  # a decryptor among 10

    def encrypt(r: Ring) -> None:
        scheme.encrypt_each(r, s_ntt, seed, n_ct, lambda c: msg[c], os.urandom, lambda c, x: None)

    def answer(r: Ring) -> None:
        scheme.answer_each(r, seed, n_ct, s_ntt, 70, os.urandom, masks, lambda c, x: None)
    for name, fn in (("encrypt/ciphertext", encrypt), ("answer/ciphertext", answer)):
        rows.append(_side_by_side(name, {k: (lambda r=r: fn(r)) for k, r in (("numpy", slow), ("compiled", fast))},
                                  max(3, reps // 8), n_ct))
    res = (rng.integers(0, 2**63, (fast.size, n_ct * fast.n), dtype=np.uint64) % fast._p)
    decoded = {}

    def decode(path: str) -> None:
        if path == "numpy":
            os.environ["SECUREFED_HE_KERNELS"] = "numpy"
        try:
            decoded[path] = crt.decode_digits(fast.primes, res, 26, 5, 72, 2.0**70, False)
        finally:
            os.environ.pop("SECUREFED_HE_KERNELS", None)
    rows.append(_side_by_side("decode/ciphertext", {k: (lambda k=k: decode(k)) for k in ("numpy", "compiled")},
                              max(3, reps // 8), n_ct))
    if not np.array_equal(decoded["numpy"], decoded["compiled"]):
        raise SystemExit("the two decodes disagree")
    if not np.array_equal(bufs["numpy"], bufs["compiled"]):  # the same sequence of transforms on x
        raise SystemExit("the numpy passes and the compiled kernels disagree")
    if args.party:
        rows.append(party_side_by_side(args.party))
    first = first_call()
    load = os.getloadavg()
    print(f"N={args.n} L={fast.size} primes=PRIMES_8192, single-threaded, load average "
          f"{' '.join(f'{v:.2f}' for v in load)}")
    print(f"{'op':20} {'numpy ms':>9} {'compiled ms':>11} {'ratio':>6}")
    for r in rows:
        print(f"{r['op']:20} {r['numpy_ms']:9.3f} {r['compiled_ms']:11.3f} {r['ratio']:5.1f}x")
        if "runs_s" in r:
            print("  each run, s: " + "; ".join(f"{k} {' '.join(f'{v:.2f}' for v in vs)}" for k, vs in r["runs_s"].items()))
    print(f"first forward+inverse in a fresh process: {first['cold_cache']:.2f} s compiling (empty cache), "
          f"{first['warm_cache']:.2f} s loading (cache filled); imports + tables before it {first['import_s']:.2f} s")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"meta": {"n": args.n, "python": sys.version.split()[0], "loadavg": load},
                       "rows": rows, "first_call_s": first}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
