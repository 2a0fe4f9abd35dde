"""benchmarks/gpu_throughput.py runs every case at toy size on CPU, so the GPU recipe cannot rot."""

from __future__ import annotations

import json

import pytest

from benchmarks.gpu_throughput import CASES, main


def test_toy_throughput_runs_every_case(tmp_path):
    pytest.importorskip("bitsandbytes")
    rows = main(["--shape", "toy", "--device", "cpu", "--quick", "--out", str(tmp_path / "t.json")])
    assert [r["case"] for r in rows] == [c[0] for c in CASES]
    assert all(r["useful_tokens_per_s"] > 0 and r["mfu"] is None for r in rows)  # no peak FLOP/s on CPU
    saved = json.loads((tmp_path / "t.json").read_text())
    assert saved["shape"] == "toy" and len(saved["results"]) == len(CASES)
