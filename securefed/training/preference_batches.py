"""DPO data for the simulation: load preference pairs, tokenise both responses, draw paired batches.

A pair is tokenised exactly like an SFT example (`batches.tokenize_example`: prompt + response + EOS,
labels IGNORE on the prompt), once with the chosen and once with the rejected response, so a DPO
sequence log-prob is the sum over the same response tokens the SFT loss covers (EOS included).
A batch of B pairs is one (2B, T) tensor: rows 0..B-1 chosen, rows B..2B-1 rejected, so policy and
reference each score a batch in a single forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from securefed.data.config import DataConfig
from securefed.data.loading import load_preferences
from securefed.data.types import PreferenceExample
from securefed.errors import ConfigError
from securefed.training.batches import Tokenized, collate, tokenize_example

# More distinct chosen responses than this and they are free text, not class labels: no partition key.
_MAX_KEYS = 64


@dataclass(frozen=True)
class TokenizedPair:
    chosen: Tokenized
    rejected: Tokenized


@dataclass(frozen=True)
class LoadedPairs:
    """What `build_world` needs from a data set, for DPO (mirrors `LoadedData`'s fields it reads)."""

    train: tuple[PreferenceExample, ...]
    eval: tuple[PreferenceExample, ...]
    labels: None  # no generated-label scoring for preference data
    skipped: int
    partition_keys: tuple[str, ...] | None
    test: tuple[PreferenceExample, ...] = ()
    inferred_preset: str | None = None  # the preset read from the file's columns (data.preset unset)


def load_pairs(cfg: DataConfig, seed: int) -> LoadedPairs:
    """`load_preferences` plus partition keys: the chosen response when it is a class label (pairs
    derived from a labelled preset), so dirichlet/natural partitions work on those; None otherwise."""
    if cfg.partition.column is not None:
        raise ConfigError("data.partition.column: preference pairs carry no extra columns; partition them "
                          "by their chosen label (leave column unset) or iid")
    data = load_preferences(cfg, seed=seed)
    chosen = tuple(e.chosen.strip() for e in data.train)
    keys = chosen if len(set(chosen)) <= _MAX_KEYS else None
    if keys is None and cfg.partition.method != "iid":
        raise ConfigError(
            f"data.partition.method: {cfg.partition.method!r} needs a class key per pair; these "
            f"preference pairs have free-text responses, use 'iid'"
        )
    return LoadedPairs(train=data.train, eval=data.eval, labels=None, skipped=data.skipped, partition_keys=keys,
                       test=data.test, inferred_preset=data.inferred_preset)


def tokenize_pair(tokenizer: Any, pair: PreferenceExample, max_length: int) -> TokenizedPair:
    return TokenizedPair(
        tokenize_example(tokenizer, pair.prompt, pair.chosen, max_length),
        tokenize_example(tokenizer, pair.prompt, pair.rejected, max_length),
    )


def tokenize_pairs(tokenizer: Any, pairs: Sequence[PreferenceExample], max_length: int) -> list[TokenizedPair]:
    return [tokenize_pair(tokenizer, p, max_length) for p in pairs]


def collate_pairs(items: Sequence[TokenizedPair], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded (2B, T) batch: the B chosen sequences, then the B rejected ones."""
    return collate([t.chosen for t in items] + [t.rejected for t in items], pad_id)


def draw_pair_batches(
    data: Sequence[TokenizedPair], n_batches: int, batch_size: int, rng: np.random.Generator, pad_id: int
) -> list[dict[str, torch.Tensor]]:
    """n_batches batches of batch_size pairs, walking seeded permutations of the party's pairs
    (the same sampling as `batches.draw_batches`)."""
    order: list[int] = []
    while len(order) < n_batches * batch_size:
        order.extend(rng.permutation(len(data)).tolist())
    return [
        collate_pairs([data[j] for j in order[i * batch_size : (i + 1) * batch_size]], pad_id)
        for i in range(n_batches)
    ]
