"""Every protocol composes with the algorithms: one round under secagg/he gives the plain adapter up
to the protocol's reported quantization bound, propagated through the server step.

Bound per coordinate after one round, with E = the protocol's error bound on the weighted delta sum
and W the total weight (so the mean update errs by at most E / W):
  FedAvg, SCAFFOLD:  |x_X - x_plain| <= eta * E / W
  FedAdam:           x1 = x0 + eta * m / (sqrt(v) + tau) with m = (1-b1) D, v = b2 tau^2 + (1-b2) D^2;
                     |d x1 / d D| <= eta * (1 - b1) / tau, so |x_X - x_plain| <= eta (1-b1)/tau * E / W.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from securefed.config import load_config
from securefed.simulation.runner import simulate

# (algorithm, Lipschitz factor of the server step in the mean update, with the config's defaults)
CASES = [("fedavg", 1.0), ("scaffold", 1.0), ("fedadam", 1e-2 * (1 - 0.9) / 1e-3)]


def _run(tmp_path, overrides, name):
    cfg = load_config(None, overrides)
    summary = simulate(cfg, tmp_path / name)
    metrics = json.loads((tmp_path / name / "metrics.jsonl").read_text().splitlines()[0])
    return load_file(str(tmp_path / name / "adapter" / "adapter_model.safetensors")), metrics, summary


@pytest.mark.parametrize("protocol", ["secagg", "he"])
@pytest.mark.parametrize("algorithm, lipschitz", CASES)
def test_protocol_matches_plain_within_bound(tmp_path, small_overrides, protocol, algorithm, lipschitz):
    # Sample-count weights for every algorithm (SCAFFOLD's default is uniform): W below is then the
    # sum of party sizes, and the protocol's fixed absolute error stays small against the mean update.
    base = small_overrides + ["rounds=1", f"algorithm.name={algorithm}", "algorithm.weighting=samples"]
    plain, _, summary = _run(tmp_path, base, "plain")
    other, metrics, _ = _run(tmp_path, base + [f"aggregation.protocol={protocol}"], protocol)
    bound_sum = metrics.get("protocol_error_bound", metrics.get("protocol_error_bound_delta_sum"))
    assert bound_sum is not None and bound_sum > 0
    total_weight = sum(summary["party_sizes"].values())
    bound = lipschitz * bound_sum / total_weight
    worst = max(float((plain[k] - other[k]).abs().max()) for k in plain)
    assert worst <= bound * (1 + 1e-6) + 1e-7, (worst, bound)
    # and the protocol really moved the adapter like plain did (not a vacuous pass)
    moved = max(float((plain[k]).abs().max()) for k in plain if "lora_B" in k)
    assert moved > 10 * bound
    assert metrics["contributors"] == 3


ALL = ["fedavg", "fedprox", "scaffold", "fedavgm", "fedadagrad", "fedyogi", "fedadam", "local"]


@pytest.mark.parametrize("protocol", ["secagg", "he"])
@pytest.mark.parametrize("algorithm", ALL)
def test_every_algorithm_runs_under_every_protocol(tmp_path, small_overrides, protocol, algorithm):
    overrides = small_overrides + ["rounds=1", "parties=3", f"algorithm.name={algorithm}",
                                   f"aggregation.protocol={protocol}", "evaluation.max_examples=4"]
    summary = simulate(load_config(None, overrides), tmp_path / "run")
    final = summary["final"]
    if algorithm == "local":  # nothing to aggregate: no protocol round runs
        assert "protocol" not in final
    else:
        assert final["protocol"] == protocol and final["contributors"] == 3
        assert final["bytes_sent_per_party"] > 0
