"""4-bit bases are quantized once and loaded from the saved 4-bit weights afterwards: the same model
(same logits as quantizing at load), without reading the full-precision checkpoint again."""

from __future__ import annotations

import pytest
import torch

from securefed.models import quantization
from securefed.models.config import ModelConfig
from securefed.models.loading import load_base


def test_saved_4bit_weights_give_the_quantize_at_load_model(tmp_path, monkeypatch):
    pytest.importorskip("bitsandbytes")
    monkeypatch.setenv("SECUREFED_CACHE", str(tmp_path))
    ids = torch.tensor([[1, 5, 9, 13, 17, 21]])
    monkeypatch.setattr("securefed.models.loading.prequantized_directory", lambda *a, **k: None)
    direct, _, _ = load_base(ModelConfig(quantization="4bit"))  # quantized from the fp32 weights
    assert not (tmp_path / "quantized").exists()
    monkeypatch.undo()
    monkeypatch.setenv("SECUREFED_CACHE", str(tmp_path))
    first, _, _ = load_base(ModelConfig(quantization="4bit"))  # quantizes and saves
    saved = list((tmp_path / "quantized").iterdir())
    assert len(saved) == 1 and (saved[0] / "config.json").is_file()
    read = []
    real = quantization.prequantized_directory
    monkeypatch.setattr("securefed.models.loading.prequantized_directory",
                        lambda *a, **k: read.append(real(*a, **k)) or read[-1])
    second, _, _ = load_base(ModelConfig(quantization="4bit"))  # reads the saved 4-bit weights
    assert read == [str(saved[0])] and second.is_loaded_in_4bit
    with torch.no_grad():
        logits = [m(input_ids=ids).logits for m in (direct, first, second)]
    torch.testing.assert_close(logits[1], logits[0])
    torch.testing.assert_close(logits[2], logits[0])
