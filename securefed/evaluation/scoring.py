"""Running a Hugging Face causal LM for evaluation: generation, log-likelihoods, NLL.

Tensor shapes use B = batch, T = padded sequence length, V = vocabulary, N = new tokens.
All functions put the model in eval mode under `torch.inference_mode()` and restore its previous
train/eval mode afterwards, so they are safe to call in the middle of training.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch

from securefed.errors import UserError
from securefed.evaluation.metrics import PreferenceScores, preference_scores

__all__ = [
    "ContinuationScore",
    "PreferenceScores",
    "SamplingParams",
    "continuation_fits",
    "continuation_logprobs",
    "generate",
    "preference_scores",
    "text_nll",
    "truncate_at_stop",
]


@dataclass(frozen=True)
class SamplingParams:
    """Decoding settings. `temperature == 0` means greedy decoding (top_p is then ignored)."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise UserError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise UserError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclass(frozen=True)
class ContinuationScore:
    """log P(continuation | context), summed over the continuation's tokens."""

    logprob: float
    num_tokens: int
    is_greedy: bool  # every continuation token is the argmax prediction


GREEDY = SamplingParams()


def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 8,
    sampling: SamplingParams = GREEDY,
    stop: Sequence[str] = (),
    add_special_tokens: bool = True,
) -> list[str]:
    """Generate a continuation for each prompt; returns only the new text, cut at the first `stop`.

    Pass `add_special_tokens=False` for prompts already rendered by a chat template, which
    usually contain the BOS text themselves.

    Prompts are left-padded so every row's last real token sits at the same position and the new
    tokens of all rows start at column T (decoder-only models continue from the right edge).
    """
    _check_batch(batch_size)
    if max_new_tokens < 1:
        raise UserError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    pad_id = _pad_token_id(tokenizer)
    if sampling.seed is not None:
        torch.manual_seed(sampling.seed)
    kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "pad_token_id": pad_id}
    if sampling.temperature > 0:
        kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
    else:
        kwargs.update(do_sample=False)
    outputs: list[str] = []
    with _eval_mode(model), _left_padding(tokenizer):
        for start in range(0, len(prompts), batch_size):
            batch = list(prompts[start : start + batch_size])
            encoded = tokenizer(
                batch, return_tensors="pt", padding=True, add_special_tokens=add_special_tokens
            )
            input_ids = encoded["input_ids"].to(_device(model))  # [B, T]
            attention_mask = encoded["attention_mask"].to(_device(model))  # [B, T]
            generated = model.generate(
                input_ids=input_ids, attention_mask=attention_mask, **kwargs
            )  # [B, T + N'] with N' <= max_new_tokens
            new_tokens = generated[:, input_ids.shape[1] :]  # [B, N']
            texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            outputs.extend(truncate_at_stop(t, stop) for t in texts)
    return outputs


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    """Cut `text` at the earliest occurrence of any stop string (the stop string is removed)."""
    cut = len(text)
    for s in stop:
        if s:
            position = text.find(s)
            if position != -1:
                cut = min(cut, position)
    return text[:cut]


def continuation_logprobs(
    model: Any,
    tokenizer: Any,
    contexts: Sequence[str],
    continuations: Sequence[str],
    *,
    batch_size: int = 8,
    max_length: int | None = None,
    names: Sequence[str] | None = None,
) -> list[ContinuationScore]:
    """Score log P(continuation_i | context_i) for each pair (multiple choice, preferences).

    `names[i]` says which item of the data pair i is in error messages (e.g. "row 11's rejected
    answer"); without it, "pair i" (0-based).

    Context and continuation are tokenized separately and concatenated, so the continuation's token
    boundary never depends on the context. The context gets the tokenizer's special tokens (e.g.
    BOS); the continuation gets none. Sequences longer than `max_length` lose tokens from the left
    of the context, never from the continuation.
    """
    if len(contexts) != len(continuations):
        raise UserError(f"{len(contexts)} contexts for {len(continuations)} continuations")
    limit = max_length or _model_max_length(model)
    sequences: list[list[int]] = []
    starts: list[int] = []
    if names is not None and len(names) != len(contexts):
        raise UserError(f"{len(names)} names for {len(contexts)} continuations")
    for index, (context, continuation) in enumerate(zip(contexts, continuations)):
        context_ids = _context_ids(tokenizer, context)
        continuation_ids = list(tokenizer(continuation, add_special_tokens=False)["input_ids"])
        name = names[index] if names is not None else f"pair {index}"
        if not continuation_ids:
            raise UserError(f"{name}: the continuation {continuation!r} has no tokens")
        if len(continuation_ids) >= limit:
            raise UserError(
                f"{name}: the continuation has {len(continuation_ids)} tokens, more than "
                f"max_length={limit} allows"
            )
        ids = (context_ids + continuation_ids)[-limit:]  # left truncation keeps the continuation
        sequences.append(ids)
        starts.append(len(ids) - len(continuation_ids))
    return _score_spans(model, tokenizer, sequences, starts, batch_size)


def text_nll(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    batch_size: int = 8,
    max_length: int | None = None,
) -> tuple[float, int]:
    """(summed NLL in nats, number of predicted tokens) over `texts`, each scored on its own.

    Every token but the first of each (possibly BOS-prefixed) text is predicted. Texts longer than
    `max_length` keep their first `max_length` tokens; texts that end up with a single token are
    skipped (nothing to predict).
    """
    limit = max_length or _model_max_length(model)
    sequences: list[list[int]] = []
    for text in texts:
        ids = _context_ids(tokenizer, text)[:limit]
        if len(ids) >= 2:
            sequences.append(ids)
    if not sequences:
        raise UserError("no text has two or more tokens; perplexity is undefined")
    scores = _score_spans(model, tokenizer, sequences, [1] * len(sequences), batch_size)
    return -sum(s.logprob for s in scores), sum(s.num_tokens for s in scores)


def _score_spans(
    model: Any,
    tokenizer: Any,
    sequences: list[list[int]],
    starts: list[int],
    batch_size: int,
) -> list[ContinuationScore]:
    """Sum log P(ids[t] | ids[:t]) over t in [start, len(ids)) for every sequence.

    Sequences are right-padded: real tokens keep positions 0..L-1, exactly as when run alone, and
    causal attention never lets them see the padding that follows. So batching changes only float
    rounding. Batches are formed from length-sorted sequences to waste little compute on padding.
    """
    _check_batch(batch_size)
    pad_id = _pad_token_id(tokenizer)
    device = _device(model)
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]), reverse=True)
    results: dict[int, ContinuationScore] = {}
    with _eval_mode(model):
        for chunk_start in range(0, len(order), batch_size):
            chunk = order[chunk_start : chunk_start + batch_size]
            width = max(len(sequences[i]) for i in chunk)
            input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)  # [B, T]
            attention_mask = torch.zeros((len(chunk), width), dtype=torch.long)  # [B, T]
            for row, i in enumerate(chunk):
                input_ids[row, : len(sequences[i])] = torch.tensor(sequences[i])
                attention_mask[row, : len(sequences[i])] = 1
            logits = model(
                input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)
            ).logits  # [B, T, V]
            # Position t-1 predicts token t; float32 so summing many log-probs stays accurate.
            logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1).cpu()  # [B, T-1, V]
            targets = input_ids[:, 1:]  # [B, T-1]
            token_logprobs = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # [B, T-1]
            greedy = logprobs.argmax(dim=-1) == targets  # [B, T-1]
            for row, i in enumerate(chunk):
                span = slice(starts[i] - 1, len(sequences[i]) - 1)  # predictions of ids[start:]
                results[i] = ContinuationScore(
                    logprob=float(token_logprobs[row, span].sum()),
                    num_tokens=len(sequences[i]) - starts[i],
                    is_greedy=bool(greedy[row, span].all()),
                )
    return [results[i] for i in range(len(sequences))]


def _context_ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of `text` with the tokenizer's special tokens; never empty.

    A first continuation token needs something to condition on. Tokenizers without a BOS
    post-processor give no tokens for "", so we fall back to BOS, then EOS, as the start symbol.
    """
    ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    if ids:
        return ids
    for start_id in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if start_id is not None:
            return [int(start_id)]
    raise UserError("empty context and the tokenizer has neither a BOS nor an EOS token")


def _pad_token_id(tokenizer: Any) -> int:
    # Causal-LM tokenizers often ship without a pad token; EOS is the conventional stand-in and is
    # safe here because padded positions are masked out (attention) or never read (scores).
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    raise UserError("the tokenizer has neither a pad token nor an EOS token to pad batches with")


@contextlib.contextmanager
def _left_padding(tokenizer: Any) -> Iterator[None]:
    previous_side = tokenizer.padding_side
    previous_pad = tokenizer.pad_token
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        yield
    finally:
        tokenizer.padding_side = previous_side
        tokenizer.pad_token = previous_pad


@contextlib.contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    was_training = bool(getattr(model, "training", False))
    if hasattr(model, "eval"):
        model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        if was_training and hasattr(model, "train"):
            model.train()


def _device(model: Any) -> torch.device:
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    parameters = getattr(model, "parameters", None)
    if callable(parameters):
        for parameter in parameters():
            return parameter.device
    return torch.device("cpu")


def _model_max_length(model: Any) -> int:
    config = getattr(model, "config", None)
    value = getattr(config, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 1 else 2048


def continuation_fits(model: Any, tokenizer: Any, continuation: str, max_length: int | None = None) -> bool:
    """Whether `continuation_logprobs` can score this continuation (non-empty, shorter than the limit)."""
    n = len(tokenizer(continuation, add_special_tokens=False)["input_ids"])
    return 0 < n < (max_length or _model_max_length(model))


def _check_batch(batch_size: int) -> None:
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
