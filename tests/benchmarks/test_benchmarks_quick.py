"""The crypto benchmarks still run end to end at their --quick size and write their JSON."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["secagg", "he"])
def test_quick_benchmark_runs(tmp_path, name):
    out = tmp_path / f"{name}.json"
    res = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", "--quick", "--out", str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "fp32" in res.stdout
    assert json.loads(out.read_text())
