"""A tiny peft-LoRA Llama and random tokenized records, built in-process (no hub, no cache)."""

from __future__ import annotations

import numpy as np
import torch

from securefed.training.batches import IGNORE, Tokenized


def tiny_lora(seed: int = 0, nonzero_b: bool = True):
    from peft import LoraConfig, get_peft_model

    from securefed.models.tiny import build_model

    base = build_model("llama", vocab_size=40, seed=seed, hidden=32, layers=1)
    for p in base.parameters():
        p.requires_grad_(False)
    model = get_peft_model(base, LoraConfig(r=2, lora_alpha=4, lora_dropout=0.0, target_modules="all-linear",
                                            task_type="CAUSAL_LM"))
    if nonzero_b:  # peft inits B = 0, which makes every A-gradient zero: test a generic point instead
        gen = torch.Generator().manual_seed(seed + 1)
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.data.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    model.eval()
    return model


def records(n: int, seed: int = 0) -> list[Tokenized]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        length = int(rng.integers(5, 9))
        ids = tuple(int(x) for x in rng.integers(3, 40, size=length))
        prompt = int(rng.integers(1, 3))
        out.append(Tokenized(ids, (IGNORE,) * prompt + ids[prompt:]))
    return out
