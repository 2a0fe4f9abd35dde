"""`securefed eval --run DIR` scores a run's adapter on the run's held-out TEST rows, matching the
simulation's own last evaluation."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from securefed.cli.app import app
from securefed.config import load_config
from securefed.simulation.runner import simulate


def test_eval_run_uses_the_test_split_and_matches_the_simulation(tmp_path, small_overrides):
    cfg = load_config(None, small_overrides + ["rounds=1", "data.test_fraction=0.1", "parties=2"])
    summary = simulate(cfg, tmp_path / "run")
    res = CliRunner().invoke(app, ["eval", "--run", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    held = json.loads(res.stdout)
    assert held["split"] == "test" and held["n"] == 16
    # same rows, adapter and prompts; the loss agrees up to float summation order in a fresh process state
    assert abs(held["metrics"]["eval_loss"] - summary["final"]["eval_loss"]) < 1e-3
    assert held["metrics"]["accuracy"] == summary["final"]["accuracy"]

    # --out, --limit and --task are honoured (they were silently ignored with --run)
    out = tmp_path / "scores"
    res = CliRunner().invoke(app, ["eval", "--run", str(tmp_path / "run"), "--limit", "5", "--out", str(out),
                                   "--task", "classification"])
    assert res.exit_code == 0, res.output
    saved = json.loads((out / "eval_heldout.json").read_text())
    assert saved["n"] == 5 and saved["task"] == "classification" and saved["split"] == "test"
    assert (out / "eval.md").read_text().startswith("- **classification (test split of run)**: eval_loss ")
    res = CliRunner().invoke(app, ["eval", "--run", str(tmp_path / "run"), "--task", "math"])
    assert res.exit_code == 2 and "scored as 'classification'" in res.output
    res = CliRunner().invoke(app, ["eval", "--run", str(tmp_path / "run"), "--data", "x.csv"])
    assert res.exit_code == 2 and "--data: with --run" in res.output


def test_eval_without_task_or_run_is_a_one_line_error(tmp_path):
    res = CliRunner().invoke(app, ["eval"])
    assert res.exit_code == 2 and "--run DIR" in res.output
    res = CliRunner().invoke(app, ["eval", "--run", str(tmp_path)])
    assert res.exit_code == 2 and "not a run directory" in res.output
