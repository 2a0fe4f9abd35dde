"""A federation whose parties pack their batches and hold a 4-bit base: the adapter sum still works
(only fp32 LoRA travels), and evaluation runs on the held-out TEST rows."""

from __future__ import annotations

import json

import pytest

from securefed.config import load_config
from securefed.simulation.runner import simulate


def test_packed_4bit_checkpointed_secagg_federation(tmp_path, small_overrides):
    pytest.importorskip("bitsandbytes")
    cfg = load_config(None, small_overrides + ["model.quantization=4bit", "training.packing=true",
                                               "training.gradient_checkpointing=true", "data.test_fraction=0.1",
                                               "aggregation.protocol=secagg"])
    summary = simulate(cfg, tmp_path / "run")
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["contributors"] for r in rows] == [3, 3]
    assert all(r["train_loss"] > 0 and 0 <= r["accuracy"] <= 1 for r in rows)
    assert rows[0]["eval_loss"] != rows[1]["eval_loss"]  # the aggregated adapter moved
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").exists()
    assert summary["final"]["round"] == 2
