"""Tokenise SFT examples (loss on response tokens only) and draw per-round batches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

IGNORE = -100  # label value that cross-entropy skips


@dataclass(frozen=True)
class Tokenized:
    input_ids: tuple[int, ...]
    labels: tuple[int, ...]  # IGNORE on prompt tokens


def tokenize_example(tokenizer: Any, prompt: str, response: str, max_length: int) -> Tokenized:
    """prompt + response + EOS; the prompt is cut from the left so the response always fits."""
    # The prompt gets the tokenizer's special prefix (e.g. BOS), exactly as generation will see it.
    p = tokenizer(prompt, add_special_tokens=needs_special_tokens(tokenizer, prompt))["input_ids"]
    r = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    r = r[:max_length]
    p = p[-(max_length - len(r)) :] if max_length > len(r) else []
    return Tokenized(tuple(p + r), tuple([IGNORE] * len(p) + r))


def needs_special_tokens(tokenizer: Any, prompt: str) -> bool:
    """False when the prompt already starts with the BOS text (a chat template wrote it): adding the
    special prefix again would give the model a doubled BOS it never saw in training."""
    bos = getattr(tokenizer, "bos_token", None)
    return not (bos and prompt.startswith(bos))


def tokenize_all(tokenizer: Any, examples: Sequence[Any], max_length: int) -> list[Tokenized]:
    return [tokenize_example(tokenizer, e.prompt, e.response, max_length) for e in examples]


def collate(items: Sequence[Tokenized], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch: input_ids, attention_mask, labels, each (B, T)."""
    width = max(len(t.input_ids) for t in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for i, t in enumerate(items):
        n = len(t.input_ids)
        ids[i, :n] = torch.tensor(t.input_ids)
        labels[i, :n] = torch.tensor(t.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def draw_batches(
    data: Sequence[Tokenized], n_batches: int, batch_size: int, rng: np.random.Generator, pad_id: int
) -> list[dict[str, torch.Tensor]]:
    """n_batches batches sampled by walking seeded permutations (epochs) of the party's data."""
    order: list[int] = []
    while len(order) < n_batches * batch_size:
        order.extend(rng.permutation(len(data)).tolist())
    return [
        collate([data[j] for j in order[i * batch_size : (i + 1) * batch_size]], pad_id) for i in range(n_batches)
    ]
