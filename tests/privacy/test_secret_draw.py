"""Secret Poisson selection (privacy.sampling_amplification) leaves no trace of the draw in what the run
writes (issue #24). The reported epsilon (q = count/parties) holds only for a reader who does not know
who was drawn; run.log, the console, metrics.jsonl, summary.json, TensorBoard and checkpoints used to
name the drawn parties, count them and carry their un-noised train_loss.

The test is differential: two runs whose draws differ, with everything the DP noise is there to hide made
equal (every party's protected update is zero and the central noise is the same stream, so both runs
release the same models), must write the same bytes in every file and print the same lines. Whatever
still differs is a function of the draw outside the mechanism."""

from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

import securefed.privacy.engine as engine_mod
from securefed.config import load_config
from securefed.protocols.base import PartyInput

TENSORBOARD = importlib.util.find_spec("tensorboard") is not None
PARTIES = [f"party-{i:02d}" for i in range(6)]
# per round, which of the 6 parties the forced draw picks (q = 2/6): the two runs differ in every round
DRAWS = {"a": [[0], [], [1, 2, 3, 4]], "b": [[3, 5], [0, 1, 2], [5]]}


def _simulate(tmp_path: Path, monkeypatch, small_overrides, name: str) -> tuple[Path, str]:
    from securefed.simulation.runner import simulate

    draws = iter(DRAWS[name])

    def forced_uniforms(n: int) -> np.ndarray:  # the draw: u < q picks a party
        u = np.ones(n)
        u[next(draws)] = 0.0
        return u

    rng = np.random.default_rng(7)  # the same noise stream in both runs
    monkeypatch.setattr(engine_mod, "secure_uniforms", forced_uniforms)
    monkeypatch.setattr(engine_mod, "secure_normal", lambda count, std: rng.normal(0.0, std, count))
    monkeypatch.setattr(engine_mod.PrivacyEngine, "party_input",
                        lambda self, delta, control, weight, max_weight=None:
                        PartyInput(np.zeros_like(delta, dtype=np.float32), None, 1.0))
    overrides = [o for o in small_overrides if not o.startswith(("parties=", "rounds="))]
    cfg = load_config(None, overrides + [
        "parties=6", "rounds=3", "sampling.count=2", "privacy.mechanism=user-central",
        "privacy.noise_multiplier=1.0", "privacy.sampling_amplification=true", "output.save_every_round=true",
        f"output.tensorboard={str(TENSORBOARD).lower()}"])
    buf = io.StringIO()
    out = tmp_path / name
    simulate(cfg, out, console=Console(file=buf, force_terminal=False, width=200))
    return out, buf.getvalue()


def _events(path: Path) -> list[tuple]:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    return [(e.wall_time, e.step, v.tag, v.simple_value if v.HasField("simple_value") else bytes(v.tensor.tensor_content))
            for e in EventFileLoader(str(path)).Load() if e.HasField("summary") for v in e.summary.value]


def _files(root: Path) -> dict[str, Path]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            rel = p.relative_to(root).as_posix()
            # TensorBoard names its event file after the clock, host and pid: compare it by its events
            out["tensorboard/EVENTS" if rel.startswith("tensorboard/") else rel] = p
    return out


def test_nothing_the_run_writes_depends_on_the_secret_draw(tmp_path, monkeypatch, small_overrides, capsys):
    run_a, console_a = _simulate(tmp_path, monkeypatch, small_overrides, "a")
    stdout_a = capsys.readouterr().out
    run_b, console_b = _simulate(tmp_path, monkeypatch, small_overrides, "b")
    stdout_b = capsys.readouterr().out

    files_a, files_b = _files(run_a), _files(run_b)
    assert files_a.keys() == files_b.keys()
    # every file the run writes is read: logs, metrics, summary, config, partition, checkpoints, adapters
    assert {"run.log", "metrics.jsonl", "summary.json", "config.json", "partition.json",
            "adapter/adapter_model.safetensors", "checkpoints/LATEST"} <= files_a.keys()
    assert any(k.startswith("checkpoints/round-") for k in files_a)
    assert any(k.startswith("rounds/round-0001/") for k in files_a)
    if TENSORBOARD:
        assert "tensorboard/EVENTS" in files_a
    for rel in files_a:
        if rel == "tensorboard/EVENTS":
            assert _events(files_a[rel]) == _events(files_b[rel])
        else:
            assert files_a[rel].read_bytes() == files_b[rel].read_bytes(), f"{rel} differs with the draw"
    assert console_a == console_b and stdout_a == stdout_b

    log = (run_a / "run.log").read_text()
    assert "training" in log or "round 1/3" in log  # the log is not empty: rounds are reported
    assert not any(f"{p} training" in log for p in PARTIES)
    rows = [json.loads(x) for x in (run_a / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    for row in rows:
        assert not {"selected", "contributors", "train_loss", "seconds"} & row.keys()
        assert sorted(row["dp_spends"]) == PARTIES  # everyone charged at q, drawn or not
        assert row["dp_drawn"] == 6
    assert "seconds_this_run" not in json.loads((run_a / "summary.json").read_text())


def test_public_selection_still_reports_everything(tmp_path, small_overrides):
    # without the secret draw nothing is held back: the selection is public (seeded)
    from securefed.simulation.runner import simulate

    out = tmp_path / "pub"
    simulate(load_config(None, small_overrides + ["privacy.mechanism=user-central", "privacy.noise_multiplier=1.0"]),
             out, console=Console(file=io.StringIO()))
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert {"selected", "contributors", "train_loss", "seconds"} <= row.keys()
    assert "party-00 training" in (out / "run.log").read_text()


def test_secret_draw_refused_where_files_would_show_it():
    from securefed.errors import ConfigError

    base = ["privacy.mechanism=user-central", "privacy.noise_multiplier=1.0", "privacy.sampling_amplification=true",
            "sampling.count=2"]
    for extra in ("algorithm.name=local", "simulation.backend=ray"):
        with pytest.raises(ConfigError, match="privacy.sampling_amplification"):
            load_config(None, base + [extra])


def test_deployment_refuses_secret_selection_before_writing_kits(tmp_path):
    # a coordinator retries and filters by availability (not Poisson), and its logs name each round's
    # parties: secret selection is simulation-only, refused at provisioning and when an app starts
    from securefed.deploy.fl_apps import provision_fl_federation
    from securefed.deploy.fl_privacy import deployment_config
    from securefed.errors import ConfigError

    cfg = load_config(None, ["privacy.mechanism=user-central", "privacy.noise_multiplier=1.0",
                             "privacy.sampling_amplification=true", "sampling.count=2", "parties=3"])
    with pytest.raises(ConfigError, match="sampling_amplification"):
        deployment_config(cfg)
    with pytest.raises(ConfigError, match="sampling_amplification"):
        provision_fl_federation(tmp_path / "kits", PARTIES[:3], "localhost", cfg, port=50051)
    assert not (tmp_path / "kits").exists()
