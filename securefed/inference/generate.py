"""Chat generation with the model's own template, streaming text as it is decoded."""

from __future__ import annotations

import threading
from typing import Any, Callable, Sequence

import torch

Message = dict  # {"role": "system" | "user" | "assistant", "content": str}


def chat_ids(tokenizer: Any, messages: Sequence[Message], device: Any) -> torch.Tensor:
    """The conversation through the chat template, ending with an open assistant turn; (1, T)."""
    text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    # the template writes any BOS itself: adding special tokens again would double it
    return tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids.to(device)


def generate_reply(model: Any, tokenizer: Any, messages: Sequence[Message], *, max_new_tokens: int = 256,
                   temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None,
                   on_text: Callable[[str], None] | None = None, device: Any = "cpu") -> tuple[str, int]:
    """(reply text, generated token count). Greedy at temperature 0. `on_text` gets each decoded piece
    as soon as it is final (transformers' streamer holds back incomplete words and UTF-8 bytes)."""
    from transformers import TextIteratorStreamer

    ids = chat_ids(tokenizer, messages, device)
    sampling = dict(do_sample=True, temperature=temperature, top_p=top_p) if temperature > 0 else dict(do_sample=False)
    if seed is not None:
        torch.manual_seed(seed)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            with torch.no_grad():
                result["out"] = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                               max_new_tokens=max_new_tokens, streamer=streamer,
                                               pad_token_id=tokenizer.pad_token_id, **sampling)
        except BaseException as e:  # re-raised in the caller's thread
            result["error"] = e
            streamer.end()

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    pieces = []
    for piece in streamer:
        pieces.append(piece)
        if on_text is not None and piece:
            on_text(piece)
    worker.join()
    if "error" in result:
        raise result["error"]
    return "".join(pieces), int(result["out"].shape[1] - ids.shape[1])
