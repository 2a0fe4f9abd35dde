"""Prompt templates: the Alpaca-style instruction template, a chat renderer, placeholder checks.

One template family for all instruction data keeps prompts consistent across presets, so a model
tuned on one preset can be evaluated with prompts built for another. Prompts end with a newline after
the response header; responses are appended verbatim (EOS is the tokenizer's job).
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping, Sequence

from securefed.errors import ConfigError

INSTRUCTION_TEMPLATE = (
    "Below is an instruction describing a task. Write a response that completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)
INSTRUCTION_WITH_INPUT_TEMPLATE = (
    "Below is an instruction describing a task, together with an input that gives more context. "
    "Write a response that completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)

CHAT_ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}
CHAT_REPLY_HEADER = "### Assistant:\n"


def placeholders(template: str) -> set[str]:
    """The `{name}` fields a template uses; raises ConfigError on a broken template."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"data.template: malformed template {template!r}: {exc}") from None
    names = set()
    for _, name, _, _ in parsed:
        if name is None:
            continue
        if name == "" or not name.isidentifier():
            raise ConfigError(
                f"data.template: placeholders must be names like {{text}}, got {{{name}}}"
            )
        names.add(name)
    return names


def check_template(template: str, allowed: Iterable[str], what: str = "data.template") -> None:
    """Raise ConfigError if the template uses a placeholder outside `allowed`."""
    allowed = set(allowed)
    unknown = placeholders(template) - allowed
    if unknown:
        raise ConfigError(
            f"{what}: unknown placeholder(s) {', '.join('{' + u + '}' for u in sorted(unknown))}; "
            f"this preset provides {', '.join('{' + a + '}' for a in sorted(allowed))}"
        )


def fill(template: str, values: Mapping[str, str]) -> str:
    """Fill a checked template. Values are never re-parsed, so braces inside data are safe."""
    return template.format_map(dict(values))


def render_chat(turns: Sequence[tuple[str, str]]) -> str:
    """Render (role, content) turns, then open the assistant reply: the prompt of a chat example."""
    blocks = [f"### {CHAT_ROLES[role]}:\n{content}" for role, content in turns]
    return "\n\n".join(blocks) + "\n\n" + CHAT_REPLY_HEADER


# render_chat as a Jinja chat template: an exported model whose base had no template of its own is
# prompted exactly as it was trained (tests/export check apply_chat_template == render_chat).
CHAT_JINJA = (
    "{%- set names = {'system': 'System', 'user': 'User', 'assistant': 'Assistant'} -%}"
    "{%- for m in messages -%}"
    "{{ '' if loop.first else '\\n\\n' }}{{ '### ' + names[m['role']] + ':\\n' + m['content'] }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '\\n\\n### Assistant:\\n' }}{%- endif -%}"
)
