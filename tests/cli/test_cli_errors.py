"""User errors through the real console script: one clear line, non-zero exit, no traceback."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

SECUREFED = [sys.executable, "-m", "securefed.cli.app"]


def cli(*args, cwd):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([*SECUREFED, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


def assert_user_error(res, *needles):
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    for n in needles:
        assert n in res.stderr, res.stderr


def test_unknown_algorithm(tmp_path):
    assert_user_error(cli("simulate", "--set", "algorithm.name=fedsgd", cwd=tmp_path), "algorithm.name", "fedavg")


def test_bad_config_value(tmp_path):
    assert_user_error(cli("simulate", "--set", "training.lr=-0.1", cwd=tmp_path), "training.lr")


def test_missing_model_path(tmp_path):
    res = cli("simulate", "--set", f"model.name_or_path={tmp_path}/nomodel", "--set", "rounds=1", cwd=tmp_path)
    assert_user_error(res, "nomodel", "no such model directory")


def test_malformed_data_row(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c"}\n')
    res = cli("simulate", "--set", f"data.source={data}", "--set", "data.preset=alpaca", "--set", "rounds=1",
              cwd=tmp_path)
    assert_user_error(res, "d.jsonl", "row 2", "output")


def test_resume_of_a_non_run(tmp_path):
    assert_user_error(cli("simulate", "--resume", str(tmp_path), cwd=tmp_path), "--resume")


def test_eval_command_on_a_simulated_adapter(tmp_path, small_overrides):
    import json

    from securefed.config import load_config
    from securefed.simulation.runner import simulate

    simulate(load_config(None, small_overrides + ["rounds=1"]), tmp_path / "run")
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"text": t, "label": l}) + "\n" for t, l in
                            [("great fun", "positive"), ("awful slow", "negative"), ("okay plain", "neutral")]))
    res = cli("eval", "--adapter", str(tmp_path / "run" / "adapter"), "--task", "classification",
              "--data", str(rows), "--out", str(tmp_path / "ev"), "--option",
              "template='Review: {text}\nSentiment:'", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    saved = json.loads((tmp_path / "ev" / "eval_classification.json").read_text())
    assert saved["n"] == 3 and 0 <= saved["metrics"]["accuracy"] <= 1
    assert "classification" in (tmp_path / "ev" / "eval.md").read_text()


def test_eval_rejects_a_missing_adapter(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"text": "a", "label": "positive"}\n')
    res = cli("eval", "--adapter", str(tmp_path / "none"), "--task", "classification", "--data", str(rows),
              cwd=tmp_path)
    assert_user_error(res, "adapter_config.json")


def test_version_and_an_interrupted_simulation_say_what_to_do(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from securefed.cli.app import app
    from securefed.simulation import runner

    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.startswith("securefed ")

    def interrupted(cfg, out, resume=False, console=None):
        if out.name == "done-one":  # a round finished: its checkpoint is whole (written atomically)
            (out / "checkpoints").mkdir(parents=True)
            (out / "checkpoints" / "LATEST").write_text("round-0001")
            (out / "metrics.jsonl").write_text('{"round": 1}\n')
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "simulate", interrupted)
    res = CliRunner().invoke(app, ["simulate", "--out", str(tmp_path / "done-one")])
    said = " ".join(res.output.split())
    assert res.exit_code == 130 and f"resume with: securefed simulate --resume {tmp_path / 'done-one'}" in said
    assert "after round 1" in said
    res = CliRunner().invoke(app, ["simulate", "--out", str(tmp_path / "none")])
    assert res.exit_code == 130 and "nothing to resume" in res.output
