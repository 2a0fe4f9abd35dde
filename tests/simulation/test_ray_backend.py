"""The Ray backend against the in-process one, on a local Ray instance this module starts once.

Same seed, same config: the final adapter is bit-identical to `inprocess` (plain protocol), also when
an actor dies mid-round and its parties are trained again (FedAvg) and when the run is interrupted
and resumed (FedAdam); a party lost with its actor in drop mode is a dropout that secagg recovers from."""

from __future__ import annotations

import json

import pytest
import torch

ray = pytest.importorskip("ray")

from securefed.config import load_config  # noqa: E402
from securefed.simulation.backends import ray_pool  # noqa: E402
from securefed.simulation.runner import simulate  # noqa: E402

RAY = ["simulation.backend=ray", "simulation.ray.num_cpus=0.5"]


@pytest.fixture(scope="module", autouse=True)
def local_ray(_tiny_cache):
    # One Ray instance for the module (start-up costs seconds on 2 cores); simulate() joins it and
    # leaves it running. _tiny_cache first: the actors' processes inherit SECUREFED_CACHE.
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def adapter(out):
    from safetensors.torch import load_file

    return load_file(str(out / "adapter" / "adapter_model.safetensors"))


def rows(out):
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def run(tmp_path, name, overrides):
    out = tmp_path / name
    simulate(load_config(None, overrides), out)
    return out


def assert_equal_adapters(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("algorithm, how", [("fedavg", "actor-killed"), ("scaffold", "plain"), ("fedadam", "resumed")])
def test_bit_identical_to_inprocess(tmp_path, small_overrides, monkeypatch, algorithm, how):
    base = small_overrides + [f"algorithm.name={algorithm}"]
    if how == "actor-killed":
        # party-02 is the third job of round 2: its actor already trained one party this round,
        # whose update dies with the process too; both are trained again (seeded: the same updates),
        # on the live actor or on the restarted one once it is back.
        monkeypatch.setattr(ray_pool, "FAULTS", {("party-02", 1): "train"})
    there = tmp_path / "ray"
    if how == "resumed":  # interrupted after round 1 (FedAdam: its m, v in the checkpoint), continued by a fresh pool
        simulate(load_config(None, base + RAY), there, stop_after=1)
        simulate(load_config(there / "config.json"), there, resume=True)
    else:
        simulate(load_config(None, base + RAY), there)
    here = run(tmp_path, "inprocess", base)
    assert_equal_adapters(adapter(here), adapter(there))
    metrics = rows(there)
    assert [m["backend"] for m in metrics] == ["ray", "ray"] and metrics[0]["ray_actors"] == 2
    assert [m["train_loss"] for m in metrics] == [m["train_loss"] for m in rows(here)]
    failures = [(m["ray_actor_failures"], m["ray_retried"], m["contributors"]) for m in metrics]
    assert failures == ([(0, 0, 3), (1, 2, 3)] if how == "actor-killed" else [(0, 0, 3), (0, 0, 3)])
    # each round's pool summary reaches run.log whatever the console (it used to go to a non-terminal only)
    log = (there / "run.log").read_text()
    assert "round 1: 3 parties trained on 2 actors" in log and "round 2: 3 parties trained on 2 actors" in log
    # the checkpoint (SCAFFOLD: every c_i) is the same state, so --resume continues identically
    a = torch.load(here / "checkpoints" / "round-0002" / "state.pt", weights_only=True)
    b = torch.load(there / "checkpoints" / "round-0002" / "state.pt", weights_only=True)
    for pid, client in a["clients"].items():
        for key in (client["control"] or {}):
            assert torch.equal(client["control"][key], b["clients"][pid]["control"][key])


def test_actor_lost_mid_protocol_is_a_secagg_dropout(tmp_path, small_overrides, monkeypatch):
    # Four actors for four parties (secagg needs four to survive one dropout): party-i trains on actor
    # i. Actor 1 dies when party-01's masked-input request arrives; in drop mode the round goes on
    # and secagg removes the masks party-01 had agreed with the others.
    overrides = small_overrides + RAY + ["parties=4", "rounds=1", "aggregation.protocol=secagg",
                                         "simulation.ray.actors=4", "simulation.ray.on_actor_failure=drop"]
    monkeypatch.setattr(ray_pool, "FAULTS", {("party-01", 0): "secagg/masked-input"})
    (m,) = rows(run(tmp_path, "ray", overrides))
    assert m["ray_actor_failures"] == 1 and m["ray_dropped"] == 1
    assert m["selected"] == 4 and m["contributors"] == 3
    assert m["protocol_recovered_dropouts"] == 1  # it had shared its keys: its pairwise masks were removed


def test_without_ray_the_backend_names_the_extra(monkeypatch, small_overrides):
    import sys

    from securefed.errors import ConfigError

    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "ray" else object())
    with pytest.raises(ConfigError, match=r"pip install 'securefed\[ray\]'"):
        load_config(None, small_overrides + ["simulation.backend=ray"])
    assert load_config(None, small_overrides).simulation.backend == "inprocess"
