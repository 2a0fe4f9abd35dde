"""benchmarks/llm_efficiency.py at toy size (embedded tiny model, 2 FPB rows a batch): every layout
and quantization case runs, the packed layouts reproduce the padded loss, and the JSON holds the
ratios docs/results.md quotes. Run as a module from the repository root (see test_gpu_throughput_quick)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_toy_efficiency_runs_every_layout_and_case(tmp_path, fpb):
    pytest.importorskip("bitsandbytes")
    res = subprocess.run([sys.executable, "-m", "benchmarks.llm_efficiency", "--model", "default", "--data", str(fpb),
                          "--device", "cpu", "--steps", "1", "--batch", "2", "--batches", "3", "--max-length", "64",
                          "--quant-cases", "none,4bit+gc,none+gc", "--out", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    saved = json.loads((tmp_path / "efficiency.json").read_text())
    by_batch = saved["packing"]["by_batch"]["3"]
    assert set(by_batch["useful_tokens_per_s"]) == {"padded", "grouped", "packed_dense_mask", "packed"}
    assert by_batch["max_abs_loss_diff"] < 1e-4
    assert all(v > 0 for v in by_batch["useful_tokens_per_s"].values())
    quant = saved["quantization"]
    assert set(quant["runs"]) == {"none", "4bit+gc", "none+gc"} and set(quant["ratios"]) == {"4bit+gc"}
    assert 0 < quant["ratios"]["4bit+gc"]["footprint_ratio"] < 1


def test_random_shape_replaces_the_model_and_is_quantized_before_the_workers(tmp_path, fpb):
    pytest.importorskip("bitsandbytes")
    env = {**os.environ, "SECUREFED_CACHE": str(tmp_path / "cache")}
    res = subprocess.run([sys.executable, "-m", "benchmarks.llm_efficiency", "--random-shape", "toy", "--data", str(fpb),
                          "--device", "cpu", "--steps", "1", "--batch", "2", "--max-length", "64", "--skip", "packing",
                          "--quant-cases", "none,4bit", "--out", str(tmp_path / "out")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    saved = json.loads((tmp_path / "out" / "efficiency.json").read_text())
    assert saved["model"] == str(tmp_path / "cache" / "random" / "toy")
    assert len(list((tmp_path / "cache" / "quantized").glob("toy-4bit-*"))) == 1  # cached before the workers ran
    assert 0 < saved["quantization"]["ratios"]["4bit"]["footprint_ratio"] < 1
    bad = subprocess.run([sys.executable, "-m", "benchmarks.llm_efficiency", "--random-shape", "70b"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, env=env)
    assert bad.returncode != 0 and "--random-shape: unknown shape '70b'" in bad.stderr


def test_an_unknown_layout_is_a_usage_error():
    bad = subprocess.run([sys.executable, "-m", "benchmarks.llm_efficiency", "--layouts", "grouped,packd"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--layouts: unknown layout(s) packd; known: grouped" in bad.stderr
