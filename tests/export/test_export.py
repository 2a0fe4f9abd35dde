"""`securefed export`: the merged checkpoint computes what base + adapter computes, the GGUF file loads
back in transformers' GGUF loader and decodes the same greedy tokens, QLoRA runs merge into the
full-precision base, and an export appears complete or not at all."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from securefed.cli.app import app
from securefed.config import load_config
from securefed.models.config import ModelConfig
from securefed.models.loading import load_adapter, load_base
from securefed.simulation.runner import simulate

TINY = ["parties=2", "rounds=1", "training.max_steps=3", "training.batch_size=4", "training.max_length=48",
        "training.lr=0.02", "data.max_examples=120", "data.eval_max=8", "evaluation.max_examples=8",
        "evaluation.batch_size=8", "data.test_fraction=0.1", "lora.target_modules='all-linear'"]
PROMPT = "Revenue rose sharply and the outlook is"


def _run(tmp_path_factory, name, extra=()):
    out = tmp_path_factory.mktemp(name) / "run"
    simulate(load_config(None, TINY + list(extra)), out)
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return _run(tmp_path_factory, "run")


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("exp") / "export"
    res = CliRunner().invoke(app, ["export", str(run), "--out", str(out), "--merge", "--gguf-type", "q8_0"])
    assert res.exit_code == 0, res.output
    return out


def _logits(model, tokenizer, text=PROMPT):
    with torch.no_grad():
        return model(tokenizer(text, return_tensors="pt").input_ids).logits


def test_merged_model_loads_alone_and_equals_base_plus_adapter(run, exported):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from securefed.data.templates import render_chat

    merged = AutoModelForCausalLM.from_pretrained(exported)
    tokenizer = AutoTokenizer.from_pretrained(exported)
    base, _, _ = load_base(ModelConfig())
    plain = _logits(base, tokenizer)
    with_adapter = _logits(load_adapter(base, run / "adapter"), tokenizer)
    assert (with_adapter - plain).abs().max() > 1e-2  # the adapter changes the model: the check has teeth
    torch.testing.assert_close(_logits(merged, tokenizer), with_adapter, atol=1e-4, rtol=1e-4)
    assert "quantization_config" not in json.loads((exported / "config.json").read_text())
    # the tiny base has no chat template: the export carries the text format the run trained on
    turns = [("system", "Be brief."), ("user", "Is this good news?")]
    rendered = tokenizer.apply_chat_template([{"role": r, "content": c} for r, c in turns], tokenize=False,
                                             add_generation_prompt=True)
    assert rendered == render_chat(turns)
    assert (exported / "adapter" / "adapter_model.safetensors").is_file()


def test_gguf_loads_back_and_decodes_the_same_greedy_tokens(exported, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from securefed.export.to_gguf import write_gguf

    merged = AutoModelForCausalLM.from_pretrained(exported)
    tokenizer = AutoTokenizer.from_pretrained(exported)
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    # f32: transformers un-permutes q/k exactly as the writer permuted them, so the logits are the merged ones
    write_gguf(merged, exported, tmp_path / "m-f32.gguf", "f32")
    exact = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="m-f32.gguf")
    assert AutoTokenizer.from_pretrained(tmp_path, gguf_file="m-f32.gguf")(PROMPT).input_ids == ids[0].tolist()
    torch.testing.assert_close(_logits(exact, tokenizer), _logits(merged, tokenizer), atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        want = merged.generate(ids, max_new_tokens=16, do_sample=False)
        assert exact.generate(ids, max_new_tokens=16, do_sample=False).tolist() == want.tolist()
        # q8_0 (what the export wrote): 8-bit blocks move every logit a little, and the random-init tiny
        # model's top-2 logits are often closer than that (measured: 5 of 16 greedy tokens agree before a
        # flip). So, teacher-forced along the merged model's greedy text: wherever the merged model's
        # top-2 margin exceeds twice the largest logit error, q8_0 must pick the same token.
        q8 = AutoModelForCausalLM.from_pretrained(exported, gguf_file="run-q8_0.gguf")
        ref, quant = merged(want).logits[0], q8(want).logits[0]
    error = (quant - ref).abs().max(dim=-1).values
    top2 = ref.topk(2, dim=-1).values
    decided = (top2[:, 0] - top2[:, 1]) > 2 * error
    assert decided.sum() >= 8 and error.max() < 0.1 * ref.abs().max()
    assert torch.equal(quant.argmax(-1)[decided], ref.argmax(-1)[decided])


def test_card_states_protocol_privacy_and_heldout_rows(run, exported):
    card = (exported / "README.md").read_text()
    meta = card.split("---")[1]
    assert "base_model:" in meta and 'library_name: "transformers"' in meta and "tags:" in meta
    assert "FL algorithm: `fedavg`" in card and "protocol: `plain`" in card and "parties: 2; rounds: 1 of 1" in card
    assert "No formal privacy guarantee" in card
    held = json.loads((run / "summary.json").read_text())["heldout"]
    assert held["split"] == "test" and f"Scored on {held['rows']} held-out rows of the test split" in card
    assert "securefed 0.1.0" in card and '"parties": 2' in card


def test_qlora_run_merges_into_the_full_precision_base(tmp_path_factory):
    pytest.importorskip("bitsandbytes")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = _run(tmp_path_factory, "qlora", ["model.quantization='4bit'"])
    out = run.parent / "export"
    res = CliRunner().invoke(app, ["export", str(run), "--out", str(out), "--merge"])
    assert res.exit_code == 0, res.output
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    assert merged.dtype == torch.float32
    tokenizer = AutoTokenizer.from_pretrained(out)
    base, _, _ = load_base(ModelConfig())  # full precision: the 4-bit weights were only the training copy
    torch.testing.assert_close(_logits(merged, tokenizer), _logits(load_adapter(base, run / "adapter"), tokenizer),
                               atol=1e-4, rtol=1e-4)
    assert "4bit (QLoRA)" in (out / "README.md").read_text()


def test_a_failed_export_leaves_nothing(run, tmp_path, monkeypatch):
    import securefed.export.to_gguf as to_gguf
    from securefed.errors import UserError

    def broken(*args, **kwargs):
        raise UserError("disk full (simulated)")

    monkeypatch.setattr(to_gguf, "write_gguf", broken)
    res = CliRunner().invoke(app, ["export", str(run), "--out", str(tmp_path / "x"), "--gguf"])
    assert res.exit_code == 2 and "disk full" in res.output
    assert list(tmp_path.iterdir()) == []  # neither the folder nor a temporary one


def test_export_refuses_a_used_folder_and_a_non_run(run, tmp_path):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "keep.txt").write_text("mine")
    res = CliRunner().invoke(app, ["export", str(run), "--out", str(tmp_path / "used")])
    assert res.exit_code == 2 and "not an empty folder" in res.output
    assert (tmp_path / "used" / "keep.txt").read_text() == "mine"
    res = CliRunner().invoke(app, ["export", str(tmp_path), "--out", str(tmp_path / "new")])
    assert res.exit_code == 2 and "adapter_model.safetensors" in res.output
    res = CliRunner().invoke(app, ["export", str(run), "--out", str(tmp_path / "n2"), "--gguf-type", "q4_k"])
    assert res.exit_code == 2 and "--gguf-type" in res.output


def test_adapter_only_export_loads_with_peft(run, tmp_path):
    res = CliRunner().invoke(app, ["export", str(run), "--out", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "README.md", "adapter_config.json", "adapter_model.safetensors", "securefed_config.json"]
    assert 'library_name: "peft"' in (tmp_path / "a" / "README.md").read_text()


def test_a_run_on_a_gguf_base_exports_merged_and_as_gguf(tmp_path_factory):
    """The base given as a .gguf file (here the tiny model written by the exporter itself, f32)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from securefed.export.to_gguf import write_gguf
    from securefed.models.sources import resolve_path

    folder = tmp_path_factory.mktemp("gguf-base")
    base, _, _ = load_base(ModelConfig())
    write_gguf(base, Path(resolve_path("default")), folder / "tiny.gguf", "f32")
    run = _run(tmp_path_factory, "on-gguf", [f"model.name_or_path='{folder / 'tiny.gguf'}'"])
    out = run.parent / "export"
    res = CliRunner().invoke(app, ["export", str(run), "--out", str(out), "--merge", "--gguf-type", "f16"])
    assert res.exit_code == 0, res.output
    merged = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    gguf_base, _, _ = load_base(ModelConfig(name_or_path=str(folder / "tiny.gguf")))
    torch.testing.assert_close(_logits(merged, tokenizer), _logits(load_adapter(gguf_base, run / "adapter"), tokenizer),
                               atol=1e-4, rtol=1e-4)
    assert 'base_model: "tiny.gguf"' in (out / "README.md").read_text()
    assert AutoModelForCausalLM.from_pretrained(out, gguf_file="run-f16.gguf").config.num_hidden_layers == 2
