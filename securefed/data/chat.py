"""Render examples for the model at hand: its own chat template (instruct models) or the preset's text
template (base models, the embedded tiny model, or when the config forces it).

An instruct model was tuned on its chat format; feeding it Alpaca text wastes what it learnt and makes
zero-shot numbers meaningless. Rendering happens once the tokenizer is known, before tokenisation, so
training (loss on the assistant reply only: the rendered conversation is the prompt), DPO and per-round
evaluation all see the same prompts.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, Sequence, TypeVar

from securefed.data.types import Example, PreferenceExample
from securefed.errors import ConfigError

PromptStyle = Literal["auto", "chat", "template"]
T = TypeVar("T")


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def uses_chat(tokenizer: Any, style: str) -> bool:
    """Whether `style` renders with the tokenizer's chat template; ConfigError for "chat" without one."""
    if style == "template":
        return False
    if style == "chat" and not has_chat_template(tokenizer):
        raise ConfigError("data.prompt_style: 'chat' but the model's tokenizer has no chat template; "
                          "use 'auto' or 'template'")
    return has_chat_template(tokenizer)


def chat_prompt(tokenizer: Any, turns: Sequence[tuple[str, str]]) -> str:
    """The conversation rendered by the model's template, ending with an open assistant turn."""
    messages = [{"role": role, "content": content} for role, content in turns]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _render(tokenizer: Any, item: Any) -> Any:
    turns = item.turns or (("user", item.prompt),)
    prompt = chat_prompt(tokenizer, turns)
    if isinstance(item, Example):
        # The reply is the whole assistant turn: no leading space the text template needed after "Answer:".
        return dataclasses.replace(item, prompt=prompt, response=item.response.strip())
    return dataclasses.replace(item, prompt=prompt, chosen=item.chosen.strip(), rejected=item.rejected.strip())


def render_loaded(data: T, tokenizer: Any, style: str) -> T:
    """LoadedData / LoadedPreferences / LoadedPairs with every split rendered for this tokenizer
    (unchanged under the text template)."""
    if not uses_chat(tokenizer, style):
        return data
    fields = {k: tuple(_render(tokenizer, item) for item in getattr(data, k)) for k in ("train", "eval", "test")}
    return dataclasses.replace(data, **fields)
