"""End-to-end simulations on the embedded tiny model: every algorithm, resume, outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from securefed.config import load_config
from securefed.simulation.runner import simulate

ALGORITHMS = ["fedavg", "fedprox", "scaffold", "fedavgm", "fedadagrad", "fedyogi", "fedadam", "local"]


def run(tmp_path, overrides, name="run"):
    cfg = load_config(None, overrides)
    return simulate(cfg, tmp_path / name), tmp_path / name


def adapter_tensors(path):
    from safetensors.torch import load_file

    return load_file(str(path / "adapter_model.safetensors"))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_algorithm_two_rounds_three_parties(tmp_path, small_overrides, algorithm):
    summary, out = run(tmp_path, small_overrides + [f"algorithm.name={algorithm}"])
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2]
    for r in rows:
        assert r["algorithm"] == algorithm
        assert r["eval_loss"] > 0 and 0 <= r["accuracy"] <= 1 and 0 <= r["macro_f1"] <= 1
        assert r["train_loss"] > 0
    if algorithm == "local":
        assert len(list((out / "local-adapters").iterdir())) == 3
        assert not (out / "adapter").exists()
    else:
        assert rows[0]["contributors"] == 3 and rows[0]["bytes_sent_per_party"] > 0
        assert (out / "adapter" / "adapter_config.json").exists()
    saved = json.loads((out / "config.json").read_text())
    assert saved["algorithm"]["name"] == algorithm
    assert summary["final"]["round"] == 2


@pytest.mark.parametrize("schedule", ["constant", "cosine"])  # cosine: the server lr's round comes back too
def test_resume_ends_with_the_same_adapter(tmp_path, small_overrides, schedule):
    base = small_overrides + ["rounds=3", "algorithm.name=fedadam", f"algorithm.server_lr_schedule={schedule}"]
    _, full = run(tmp_path, base, "full")
    # Interrupted after 2 of 3 rounds, then resumed from the saved config and checkpoint.
    simulate(load_config(None, base), tmp_path / "part", stop_after=2)
    assert (tmp_path / "part" / "checkpoints" / "LATEST").read_text() == "round-0002"
    simulate(load_config(tmp_path / "part" / "config.json"), tmp_path / "part", resume=True)
    a, b = adapter_tensors(full / "adapter"), adapter_tensors(tmp_path / "part" / "adapter")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    rounds = [json.loads(x)["round"] for x in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert rounds == [1, 2, 3]


def test_existing_run_is_not_overwritten(tmp_path, small_overrides):
    from securefed.errors import UserError

    run(tmp_path, small_overrides + ["rounds=1"])
    with pytest.raises(UserError, match="--resume"):
        run(tmp_path, small_overrides + ["rounds=1"])


def test_adapter_loads_with_peft(tmp_path, small_overrides):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from securefed.models.loading import resolve_path

    _, out = run(tmp_path, small_overrides + ["rounds=1"])
    base = AutoModelForCausalLM.from_pretrained(resolve_path("default"))
    model = PeftModel.from_pretrained(base, str(out / "adapter"))
    saved = adapter_tensors(out / "adapter")
    loaded = {n.replace(".default", ""): p for n, p in model.named_parameters() if "lora_" in n}
    assert saved and all(torch.equal(saved[k], loaded[k]) for k in saved)
    assert json.loads((out / "adapter" / "securefed_config.json").read_text())["rounds"] == 1
    # portable: a name that means something on another machine (not this one's cache path), and the hash
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == "default"
    base_file = next(Path(resolve_path("default")).glob("*.safetensors"))
    import hashlib

    want = hashlib.sha256(base_file.name.encode() + b"\0" + base_file.read_bytes()).hexdigest()
    assert json.loads((out / "adapter" / "base_model.json").read_text()) == {"name": "default", "sha256": want}


def test_client_sampling_selects_a_fraction(tmp_path, small_overrides):
    _, out = run(tmp_path, small_overrides + ["sampling.count=2"])
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(r["selected"] == 2 and r["contributors"] == 2 for r in rows)


def test_resume_refuses_another_config_and_rewrites_nothing(tmp_path, small_overrides):
    """A resume whose config differs from the checkpoint's in anything that decides the rounds still
    to come would splice two runs; it is refused (naming the setting) before OUT is touched. Where
    the files are, the device and how often it scores may change."""
    from securefed.errors import UserError

    base = small_overrides + ["rounds=2", "sampling.count=2", "evaluation.every=2"]
    out = tmp_path / "part"
    simulate(load_config(None, base), out, stop_after=1)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(UserError, match=r"training\.lr \(0\.0005 there, 0\.001 here\)"):
        simulate(load_config(None, base + ["training.lr=1e-3"]), out, resume=True)
    with pytest.raises(UserError, match=r"sampling\.rule \('sha256-rank' there, 'numpy-choice' here\)"):
        simulate(load_config(None, base + ["sampling.rule=numpy-choice"]), out, resume=True)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    # A checkpoint from before `sampling.rule` ran numpy-choice: resuming it under today's default is refused.
    ckpt_cfg = out / "checkpoints" / "round-0001" / "config.json"
    old = json.loads(ckpt_cfg.read_text())
    del old["sampling"]["rule"]
    ckpt_cfg.write_text(json.dumps(old))
    with pytest.raises(UserError, match=r"sampling\.rule \('numpy-choice' there, 'sha256-rank' here\)"):
        simulate(load_config(None, base), out, resume=True)
    summary = simulate(load_config(None, base + ["sampling.rule=numpy-choice", "evaluation.every=1"]), out, resume=True)
    assert summary["final"]["round"] == 2
