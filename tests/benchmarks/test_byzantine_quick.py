"""benchmarks/byzantine.py runs end to end at toy size, appends one row per run and resumes; its
attack hook really replaces a malicious party's update and skips its clips, and only inside the block."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import torch

from benchmarks.byzantine import attacked
from securefed.aggregate import FlatLayout
from securefed.algorithms.base import ClientState
from securefed.protocols import encoding
from securefed.robust.bounds import InputBound
from securefed.simulation import runner
from securefed.training.sft import LocalResult

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_grid_appends_rows_and_resumes(tmp_path):
    cmd = [sys.executable, "-m", "benchmarks.byzantine", "--quick", "--tasks", "demo", "--algorithms", "fedavg",
           "--aggregators", "mean,median,secagg", "--attacks", "scaling", "--malicious", "1", "--out", str(tmp_path)]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = [json.loads(x) for x in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert {(r["aggregator"], r["attack"], r["malicious"]) for r in rows} == {
        (a, s, k) for a in ("mean", "median", "secagg") for s, k in (("none", 0), ("scaling", 1))}
    assert all(0 <= r["accuracy"] <= 1 and r["rounds"] == 1 for r in rows)
    assert "| demo | fedavg | secagg |" in (tmp_path / "results.md").read_text()
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and len((tmp_path / "rows.jsonl").read_text().splitlines()) == len(rows)


def test_attack_hook_replaces_the_update_and_skips_clips_only_inside(monkeypatch):
    layout = FlatLayout.of({"w": torch.zeros(4)})
    honest = LocalResult({"w": torch.tensor([0.1, -0.2, 0.3, 0.0])}, None, ClientState(), 1, 0.0)
    monkeypatch.setattr(runner, "_train_party", lambda world, pid, *a: honest)
    clip = InputBound(coord=0.15)
    with attacked("scaling", {"bad"}, 1.0, 0):
        good = runner.party_input(runner._train_party(None, "good", 0, 0.1, None, None), layout, 1.0, clip)
        bad = runner.party_input(runner._train_party(None, "bad", 0, 0.1, None, None), layout, 1.0, clip)
        out = np.zeros(4, encoding.ring_dtype(16))
        encoding.quantize_into(out, bad.delta, 0.15, 1.0, 1000, lambda n: bytes(n), 16)
        assert encoding.from_ring(out, 16).tolist() == [10, -20, 30, 0]  # its codec skips the clip too
    assert np.allclose(good.delta, [0.1, -0.15, 0.15, 0.0])  # honest: clipped
    assert np.allclose(bad.delta, [10.0, -20.0, 30.0, 0.0])  # x100, unclipped
    assert runner.party_input.__module__ == "securefed.simulation.steps"  # restored
    assert encoding.quantize_into.__module__ == "securefed.protocols.encoding"
