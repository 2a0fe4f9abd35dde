"""Optional MLflow tracking (output.mlflow): params and per-round metrics in a file store, no server."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from securefed.config import load_config
from securefed.errors import ConfigError
from securefed.simulation.runner import simulate


def test_a_run_logs_params_and_each_rounds_metrics_to_a_file_store(tmp_path, small_overrides):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    out = tmp_path / "run"
    simulate(load_config(None, small_overrides + ["output.mlflow=true"]), out, console=Console(file=io.StringIO()))
    client = MlflowClient(tracking_uri=(out / "mlruns").resolve().as_uri())
    run = client.get_run((out / "mlflow_run_id").read_text().strip())
    assert run.info.status == "FINISHED" and run.data.params["algorithm.name"] == "fedavg"
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in history] == [1, 2]
    assert [m.value for m in history] == pytest.approx([r["train_loss"] for r in rows])


def test_off_by_default_and_a_clear_error_without_the_package(monkeypatch):
    assert load_config(None, []).output.mlflow is False
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ConfigError, match=r"output.mlflow.*pip install 'securefed\[mlflow\]'"):
        load_config(None, ["output.mlflow=true"])
