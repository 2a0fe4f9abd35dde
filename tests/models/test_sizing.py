"""Provisioning sizes messages from the base's config and the LoRA shapes, without reading weights,
and gets the same adapter size as the loaded model."""

from __future__ import annotations

import pytest

from securefed.aggregate import FlatLayout
from securefed.config import load_config
from securefed.models.adapter import get_adapter_state
from securefed.models.loading import attach_lora, load_base


@pytest.mark.parametrize("lora", [[], ["lora.target_modules='all-linear'", "lora.r=4"]])
def test_message_bound_reads_no_weights_and_matches_the_loaded_adapter(lora, monkeypatch):
    from transformers import AutoModelForCausalLM

    import securefed.models.loading as loading
    from securefed.deploy.fl_apps import message_bound

    cfg = load_config(None, lora)
    loaded = FlatLayout.of(get_adapter_state(attach_lora(load_base(cfg.model)[0], cfg.lora))).size

    def refuse(*a, **k):
        raise AssertionError("provisioning loaded the base model's weights")

    monkeypatch.setattr(loading, "load_base", refuse)
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", refuse)
    assert message_bound(cfg) == (16 << 20) + 3 * (2 * 4 * loaded)


def test_unknown_base_is_a_model_error(tmp_path):
    from securefed.errors import ModelError
    from securefed.models.sizing import adapter_numel

    cfg = load_config(None, [f"model.name_or_path='{tmp_path / 'missing.gguf'}'"])
    with pytest.raises(ModelError, match="no such GGUF file"):
        adapter_numel(cfg.model, cfg.lora)
