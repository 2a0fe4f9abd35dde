"""Test doubles for the evaluation tests: a lossless byte-level tokenizer, a tiny random Llama,
a scripted generator (exact generation outputs) and a fixed-distribution scorer (exact log-probs).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from types import SimpleNamespace
from typing import Sequence

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

FIXTURES = Path(__file__).parent / "fixtures"
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]


def byte_tokenizer(add_bos: bool = True) -> PreTrainedTokenizerFast:
    """One token per byte (no merges), so decode(encode(s)) == s for any text; ids 0-3 special."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: i for i, token in enumerate(SPECIALS + alphabet)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    if add_bos:
        backend.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 1)]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        clean_up_tokenization_spaces=False,
    )


def tiny_llama(vocab_size: int, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return LlamaForCausalLM(config).eval()


class ScriptedGenerator:
    """`generate` answers each prompt with a scripted text: the first key of `script` found in the
    prompt selects a list of responses, used in turn (cycling) on successive calls for it."""

    device = torch.device("cpu")

    def __init__(self, tokenizer: PreTrainedTokenizerFast, script: dict[str, Sequence[str]]):
        self.tokenizer = tokenizer
        self.script = {key: itertools.cycle(values) for key, values in script.items()}
        self.prompts: list[str] = []
        self.batches: list[torch.Tensor] = []
        self.kwargs: list[dict] = []

    def generate(self, input_ids, attention_mask, max_new_tokens, pad_token_id, **kwargs):
        self.batches.append(input_ids.clone())
        self.kwargs.append(dict(kwargs, max_new_tokens=max_new_tokens))
        new_rows = []
        for ids, mask in zip(input_ids, attention_mask):
            prompt = self.tokenizer.decode(ids[mask.bool()], skip_special_tokens=True)
            self.prompts.append(prompt)
            key = next(k for k in self.script if k in prompt)
            response = next(self.script[key])
            new_rows.append(
                self.tokenizer(response, add_special_tokens=False)["input_ids"][:max_new_tokens]
            )
        width = max(len(r) for r in new_rows)
        new = torch.full((len(new_rows), width), pad_token_id, dtype=torch.long)  # [B, N]
        for i, row in enumerate(new_rows):
            new[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        return torch.cat([input_ids, new], dim=1)


class FixedScorer:
    """A 'causal LM' whose next-token distribution is softmax(bias) at every position, so
    log P(token) = bias[token] - logsumexp(bias) regardless of context."""

    def __init__(self, vocab_size: int, boosts: dict[int, float] | None = None):
        self.bias = torch.zeros(vocab_size)
        for token, value in (boosts or {}).items():
            self.bias[token] = value
        self.calls = 0

    def __call__(self, input_ids, attention_mask):
        self.calls += 1
        batch, length = input_ids.shape
        return SimpleNamespace(logits=self.bias.expand(batch, length, -1).clone())  # [B, T, V]

    def logprob(self, token: int) -> float:
        return float(self.bias[token] - torch.logsumexp(self.bias, dim=0))


class AdapterScorer(FixedScorer):
    """FixedScorer with a PEFT-like `disable_adapter()` that switches to a second bias."""

    def __init__(self, vocab_size: int, boosts: dict[int, float], base_boosts: dict[int, float]):
        super().__init__(vocab_size, boosts)
        self.base = FixedScorer(vocab_size, base_boosts)
        self.disabled = False

    def __call__(self, input_ids, attention_mask):
        return (self.base if self.disabled else super()).__call__(input_ids, attention_mask)

    def disable_adapter(self):
        scorer = self

        class _Disabled:
            def __enter__(self):
                scorer.disabled = True

            def __exit__(self, *exc):
                scorer.disabled = False

        return _Disabled()
