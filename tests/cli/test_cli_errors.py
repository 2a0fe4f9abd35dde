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
