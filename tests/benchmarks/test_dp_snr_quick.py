"""benchmarks/dp_snr.py: the signal a clipped step can carry, and the table at toy size (embedded model)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import torch

from benchmarks.dp_snr import signal
from tests.benchmarks.conftest import ROOT


def test_signal_is_clip_for_aligned_gradients_and_shrinks_as_one_over_sqrt_b_for_orthogonal_ones():
    rng = np.random.default_rng(0)
    aligned = torch.ones(64, 10) * 5.0  # every example pulls the same way, each norm >> C: all clipped to C
    assert abs(signal(aligned, 1.0, 16, rng) - 1.0) < 1e-6
    orthogonal = torch.eye(64) * 3.0  # disjoint directions: || mean of B clipped || = sqrt(B) / B
    assert abs(signal(orthogonal, 1.0, 16, rng) - 0.25) < 1e-6
    small = torch.eye(64) * 0.5  # below the clip: untouched
    assert abs(signal(small, 1.0, 4, rng) - 0.25) < 1e-6


def test_toy_dp_snr_table(tmp_path, fpb):
    res = subprocess.run([sys.executable, "-m", "benchmarks.dp_snr", "--model", "default", "--data", str(fpb),
                          "--examples", "6", "--batches", "8", "--epsilons", "4", "8", "--out", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    doc = json.loads((tmp_path / "dp_snr.json").read_text())
    rows = doc["rows"]
    assert len(rows) == 10 * 2  # parties x epsilons (one batch size: each accountant solve takes seconds)
    base = doc["measured"]["base (round 0)"]
    assert 0.0 <= base["clip_rate"] <= 1.0 and 0 < base["signal"]["8"] <= 1.0 + 1e-6
    for r in rows:  # the noise norm is z C sqrt(d) / (q N)
        assert abs(r["noise_norm"] - r["z"] * np.sqrt(doc["d"]) / (r["q"] * r["records"])) < 1e-6 * r["noise_norm"]
    one = {r["epsilon"]: r["z"] for r in rows if r["party"] == rows[0]["party"] and r["batch"] == 8}
    assert one[4.0] > one[8.0] > 0  # a tighter budget needs more noise
    assert "| 8 | 8 |" in res.stdout
