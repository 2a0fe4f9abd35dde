"""benchmarks/gpu_throughput.py runs every case at toy size on CPU, so the GPU recipe cannot rot.

Run as `python -m benchmarks.gpu_throughput` from the repository root, as a user would: a plain
`import benchmarks` inside pytest can resolve to the unrelated top-level `benchmarks` package that
opacus installs into site-packages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_toy_throughput_runs_every_case(tmp_path):
    pytest.importorskip("bitsandbytes")
    out = tmp_path / "t.json"
    res = subprocess.run([sys.executable, "-m", "benchmarks.gpu_throughput", "--shape", "toy", "--device", "cpu",
                          "--quick", "--compile-backend", "eager", "--out", str(out)], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    saved = json.loads(out.read_text())
    rows = saved["results"]
    assert saved["shape"] == "toy"
    assert [r["case"] for r in rows] == ["padded", "packed", "packed + grad ckpt", "packed 4-bit",
                                         "packed 4-bit + grad ckpt", "DP-SGD ghost (padded)", "fixed length",
                                         "fixed length + compile"]  # CUDA graphs: CUDA only (said on stdout)
    assert "not on CUDA: the CUDA graphs case skipped" in res.stdout
    assert all(r["useful_tokens_per_s"] > 0 and r["mfu"] is None for r in rows)  # no peak FLOP/s on CPU
    assert rows[-1]["vs_fixed_eager"] > 0 and rows[-2]["vs_fixed_eager"] == 1.0
    assert rows[-1]["compiled_graphs"] >= 1 and "compiled_graphs" not in rows[-2]  # it did trace the step
