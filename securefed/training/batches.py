"""Tokenise SFT examples (loss on response tokens only) and draw per-round batches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

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


def collate_packed(items: Sequence[Tokenized], pad_id: int) -> dict[str, torch.Tensor]:
    """Padding-free batch: the examples laid end to end in one row, (1, sum of lengths), no pad token.

    position_ids restart at 0 for each example and there is no attention_mask: transformers reads the
    restarts as packed sequences and keeps attention inside each example (block-diagonal causal mask
    for SDPA/eager, varlen kernels for flash attention), so every token sees exactly what it would
    in its own row. The first token of each example is unlabelled: under the shifted LM loss it would
    be predicted from the previous example's last token. `pad_id` is unused (same signature as collate).
    """
    ids = torch.tensor([tok for t in items for tok in t.input_ids], dtype=torch.long)
    positions = torch.cat([torch.arange(len(t.input_ids)) for t in items])
    labels = torch.tensor([IGNORE if j == 0 else lab for t in items for j, lab in enumerate(t.labels)],
                          dtype=torch.long)
    return {"input_ids": ids[None], "position_ids": positions[None], "labels": labels[None]}


def useful_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Real (non-pad) tokens in a padded or packed batch: what throughput should count."""
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None else int(batch["input_ids"].numel())


def draw_batches(
    data: Sequence[Tokenized], n_batches: int, batch_size: int, rng: np.random.Generator, pad_id: int,
    collate_fn: Callable[[Sequence[Tokenized], int], dict[str, torch.Tensor]] = collate,
) -> list[dict[str, torch.Tensor]]:
    """n_batches batches sampled by walking seeded permutations (epochs) of the party's data."""
    order: list[int] = []
    while len(order) < n_batches * batch_size:
        order.extend(rng.permutation(len(data)).tolist())
    return [
        collate_fn([data[j] for j in order[i * batch_size : (i + 1) * batch_size]], pad_id)
        for i in range(n_batches)
    ]
