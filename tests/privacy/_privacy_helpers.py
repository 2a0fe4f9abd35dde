"""A tiny peft-LoRA Llama and random tokenized records, built in-process (no hub, no cache), and the
manual per-unit clipping and gradient spy the DP-SGD tests compare Opacus against."""

from __future__ import annotations

import numpy as np
import torch

from securefed.algorithms.base import Algorithm, finish_without_control, no_client_state
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


def spy_algorithm(seen: list):
    """An algorithm whose gradient correction records the privatised gradients it is handed."""
    def correction(params, grads, ctx, state):
        seen.append({k: g.detach().clone() for k, g in grads.items()})
        return dict(grads)

    return Algorithm("spy", lambda p: None, lambda s, a: s, no_client_state, finish_without_control, correction)


def clipped_mean(grads, clip, expected):
    """Per-unit gradients -> (sum of each clipped to L2 `clip`, divided by `expected`; their norms)."""
    total = {k: torch.zeros_like(v) for k, v in grads[0].items()}
    norms = []
    for g in grads:
        norm = torch.sqrt(sum((v.double() ** 2).sum() for v in g.values())).item()
        norms.append(norm)
        for k in total:
            total[k] += g[k] * min(1.0, clip / (norm + 1e-6))
    return {k: v / expected for k, v in total.items()}, norms
