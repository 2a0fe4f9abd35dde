"""Optional MLflow tracking beside TensorBoard (`output.mlflow = true`): the run's main settings as
params and every numeric metric per round (step = round), logged as the run goes.

MLflow is an optional extra (`pip install 'securefed[mlflow]'`, the client-only mlflow-skinny); off
by default. Without `output.mlflow_uri` runs go to a file store in OUT/mlruns (no server needed:
`mlflow ui --backend-store-uri OUT/mlruns`); with one (http://..., databricks, ...) to that server.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from securefed.reporting.tensorboard import scalars

MISSING = "output.mlflow = true needs MLflow: pip install 'securefed[mlflow]'"
PARAMS = ("task", "parties", "rounds", "seed", "model.name_or_path", "algorithm.name", "aggregation.protocol",
          "training.lr", "training.max_steps", "lora.r", "data.source", "privacy.mechanism")


def missing() -> str | None:
    return MISSING if importlib.util.find_spec("mlflow") is None else None


def params_of(cfg: Any) -> dict[str, str]:
    """The settings that tell runs apart, flattened to MLflow's string params."""
    out = {}
    for dotted in PARAMS:
        value: Any = cfg
        for part in dotted.split("."):
            value = getattr(value, part)
        out[dotted] = str(value)
    return out


@contextlib.contextmanager
def mlflow_writer(cfg: Any, out_dir: Path, resume: bool = False) -> Iterator[Callable[[Mapping[str, Any]], None]]:
    """Yields log(metrics) for one round; a no-op unless `cfg.output.mlflow`. A resumed run logs into
    the MLflow run it started (its id is kept in OUT/mlflow_run_id)."""
    if not cfg.output.mlflow:
        yield lambda metrics: None
        return
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    uri = cfg.output.mlflow_uri
    if uri is None:
        # Our default: a file store beside the run (no server, no database). MLflow 3 keeps that backend
        # in maintenance mode and refuses it unless told this is wanted.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        uri = (Path(out_dir).resolve() / "mlruns").as_uri()
    client = MlflowClient(tracking_uri=uri)
    id_file = Path(out_dir) / "mlflow_run_id"
    if resume and id_file.is_file():
        run_id = id_file.read_text(encoding="utf-8").strip()
    else:
        experiment = client.get_experiment_by_name(cfg.output.mlflow_experiment)
        experiment_id = (experiment.experiment_id if experiment is not None
                         else client.create_experiment(cfg.output.mlflow_experiment))
        run_id = client.create_run(experiment_id, run_name=Path(out_dir).name).info.run_id
        for key, value in params_of(cfg).items():
            client.log_param(run_id, key, value)
        id_file.write_text(run_id + "\n", encoding="utf-8")
    status = "FAILED"
    try:
        def log(metrics: Mapping[str, Any]) -> None:
            step, now = int(metrics["round"]), int(time.time() * 1000)
            client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in scalars(metrics).items()])

        yield log
        status = "FINISHED"
    finally:
        client.set_terminated(run_id, status)
