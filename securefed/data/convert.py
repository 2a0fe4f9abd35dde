"""Turn one raw row into an `Example` or `PreferenceExample` following a preset.

Every problem with a row raises `Malformed(reason)`; the loader adds "<file> row <n>: " and either
raises DataError or counts a skip. Keeping the policy out of here means each check is written once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from securefed.data.presets import Preset
from securefed.data.readers import RowProblem
from securefed.data.templates import CHAT_ROLES, fill, render_chat
from securefed.data.types import Example, PreferenceExample

DIALOGUE_REPLY = "Assistant:"


class Malformed(Exception):
    """A row that cannot become an example; str(self) is the reason."""


@dataclass(frozen=True)
class RowConverter:
    """A preset resolved against the config: role columns, template override, label list."""

    preset: Preset
    columns: Mapping[str, str]
    template: str | None = None
    labels: tuple[str, ...] | None = None
    partition_column: str | None = None

    def example(self, row: Any) -> tuple[Example, str | None]:
        """The SFT example of `row` and its partition key (column value, or the label)."""
        row = _as_mapping(row)
        kind = self.preset.kind
        if kind == "instruction":
            example = self._instruction(row)
        elif kind == "classification":
            example = self._classification(row)
        elif kind == "chat":
            column = self.columns["messages"]
            turns, reply = _split_chat(row_value(row, column), column)
            example = Example(prompt=render_chat(turns), response=reply, turns=tuple(turns))
        else:
            raise Malformed(f"preset kind {kind!r} holds preference pairs, not SFT examples")
        key = self._partition_key(row)
        if key is None:
            return example, example.label
        if kind != "classification":
            # For instruction data the category is the example's label (see Example docs).
            example = Example(example.prompt, example.response, label=key, turns=example.turns)
        return example, key

    def preference(self, row: Any) -> PreferenceExample:
        row = _as_mapping(row)
        if self.preset.kind == "preference":
            return self._chat_preference(row)
        if self.preset.kind == "dialogue_preference":
            return self._dialogue_preference(row)
        raise Malformed(f"preset kind {self.preset.kind!r} holds no preference pairs")

    # --- SFT kinds -------------------------------------------------------------------------------

    def _instruction(self, row: Mapping[str, Any]) -> Example:
        instruction = text_field(row, self.columns["instruction"])
        input_column = self.columns.get("input")
        extra = text_field(row, input_column, optional=True) if input_column else ""
        output = text_field(row, self.columns["output"])
        if self.template is not None:
            template = self.template
        elif extra:
            template = self.preset.template
        else:
            template = self.preset.template_no_input or self.preset.template
        prompt = fill(template, {"instruction": instruction, "input": extra})
        # A chat model sees the request itself as the user turn (a user template stays as written).
        user = prompt if self.template is not None else "\n\n".join(t for t in (instruction, extra) if t)
        return Example(prompt=prompt, response=output, turns=(("user", user),))

    def _classification(self, row: Mapping[str, Any]) -> Example:
        text = text_field(row, self.columns["text"])
        label = self._label(row)
        labels = self.labels or ()
        prompt = fill(self.template or self.preset.template, {"text": text, "labels": or_list(labels)})
        response = fill(self.preset.response_template, {"label": label})
        return Example(prompt=prompt, response=response, label=label, turns=(("user", prompt),))

    def _label(self, row: Mapping[str, Any]) -> str:
        column = self.columns["label"]
        value = row_value(row, column)
        labels = self.labels or ()
        # Hub copies of labelled sets often store a class index (datasets.ClassLabel).
        if isinstance(value, int) and not isinstance(value, bool):
            if 0 <= value < len(labels):
                return labels[value]
            raise Malformed(f"label index {value} in field {column!r} is outside 0..{len(labels) - 1}")
        if not isinstance(value, str):
            raise Malformed(f"field {column!r} must be text, got {type(value).__name__}")
        wanted = value.strip().casefold()
        for label in labels:
            if label.casefold() == wanted:
                return label
        raise Malformed(
            f"unknown label {value.strip()!r} in field {column!r} (known: {', '.join(labels)})"
        )

    def _partition_key(self, row: Mapping[str, Any]) -> str | None:
        if self.partition_column is None:
            return None
        value = row.get(self.partition_column)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise Malformed(f"missing partition column {self.partition_column!r}")
        return str(value).strip()

    # --- preference kinds ------------------------------------------------------------------------

    def _chat_preference(self, row: Mapping[str, Any]) -> PreferenceExample:
        sides = {}
        for role in ("chosen", "rejected"):
            column = self.columns[role]
            value = _maybe_json(row_value(row, column))
            if isinstance(value, list):
                sides[role] = _split_chat(value, column)
            elif isinstance(value, str) and value.strip():
                sides[role] = (None, value.strip())
            else:
                raise Malformed(f"field {column!r} must be a message list or non-empty text")
        (c_turns, chosen), (r_turns, rejected) = sides["chosen"], sides["rejected"]
        if c_turns is not None and r_turns is not None and c_turns != r_turns:
            raise Malformed("'chosen' and 'rejected' continue different conversations")
        turns = c_turns if c_turns is not None else r_turns
        if turns is None:
            prompt_column = self.columns.get("prompt")
            if prompt_column is None:
                raise Malformed("text answers need a 'prompt' field (set data.fields.prompt)")
            turns = [("user", text_field(row, prompt_column))]
        return PreferenceExample(prompt=render_chat(turns), chosen=chosen, rejected=rejected, turns=tuple(turns))

    def _dialogue_preference(self, row: Mapping[str, Any]) -> PreferenceExample:
        chosen_column, rejected_column = self.columns["chosen"], self.columns["rejected"]
        prompt, chosen, rejected = split_dialogue(
            text_field(row, chosen_column), text_field(row, rejected_column), chosen_column, rejected_column)
        return PreferenceExample(prompt=prompt, chosen=chosen, rejected=rejected, turns=_dialogue_turns(prompt))


def split_dialogue(chosen: str, rejected: str, chosen_name: str = "chosen",
                   rejected_name: str = "rejected") -> tuple[str, str, str]:
    """(prompt, chosen reply, rejected reply) of an HH-RLHF style pair of whole dialogues.

    The shared prompt is everything up to (and including) the last "Assistant:" turn of `chosen`;
    both replies are what follows it. Raises Malformed naming the field at fault."""
    cut = chosen.rfind("\n\n" + DIALOGUE_REPLY)
    cut = chosen.rfind(DIALOGUE_REPLY) if cut < 0 else cut + 2
    if cut < 0:
        raise Malformed(f"no {DIALOGUE_REPLY!r} turn in field {chosen_name!r}")
    prefix = chosen[: cut + len(DIALOGUE_REPLY)]
    if not rejected.startswith(prefix):
        raise Malformed(f"fields {chosen_name!r} and {rejected_name!r} do not share the prompt")
    chosen_reply, rejected_reply = chosen[len(prefix):].rstrip(), rejected[len(prefix):].rstrip()
    for name, reply in ((chosen_name, chosen_reply), (rejected_name, rejected_reply)):
        if not reply.strip():
            raise Malformed(f"empty final assistant reply in field {name!r}")
    return prefix, chosen_reply, rejected_reply


# --- field helpers --------------------------------------------------------------------------------


def _as_mapping(row: Any) -> Mapping[str, Any]:
    if isinstance(row, RowProblem):
        raise Malformed(row.reason)
    if not isinstance(row, Mapping):
        raise Malformed(f"row must be an object with named fields, got {type(row).__name__}")
    return row


def row_value(row: Mapping[str, Any], column: str) -> Any:
    if column not in row or row[column] is None:
        raise Malformed(f"missing field {column!r}")
    return row[column]


def text_field(row: Mapping[str, Any], column: str, optional: bool = False) -> str:
    """A stripped text value; missing/empty is malformed unless optional (then "")."""
    value = row.get(column)
    if value is None:
        if optional:
            return ""
        raise Malformed(f"missing field {column!r}")
    if not isinstance(value, str):
        raise Malformed(f"field {column!r} must be text, got {type(value).__name__}")
    value = value.strip()
    if not value and not optional:
        raise Malformed(f"empty field {column!r}")
    return value


def or_list(labels: Sequence[str]) -> str:
    """"a, b or c" for prompt templates that list the answers."""
    if len(labels) < 2:
        return "".join(labels)
    return ", ".join(labels[:-1]) + " or " + labels[-1]


def _maybe_json(value: Any) -> Any:
    # CSV cells can only hold text: accept a JSON-encoded message list there.
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _split_chat(messages: Any, column: str) -> tuple[list[tuple[str, str]], str]:
    """(turns before the last assistant turn, that turn's content). Turns after it are dropped:
    they have no answer to learn from."""
    messages = _maybe_json(messages)
    if not isinstance(messages, list) or not messages:
        raise Malformed(f"field {column!r} must be a non-empty list of messages")
    turns: list[tuple[str, str]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise Malformed(f"message {i + 1} of {column!r} must be an object with role and content")
        role, content = message.get("role"), message.get("content")
        if role not in CHAT_ROLES:
            raise Malformed(
                f"message {i + 1} of {column!r} has role {role!r}; "
                f"expected one of {', '.join(CHAT_ROLES)}"
            )
        if not isinstance(content, str):
            raise Malformed(f"message {i + 1} of {column!r} has no text content")
        turns.append((role, content.strip()))
    last = max((i for i, (role, _) in enumerate(turns) if role == "assistant"), default=-1)
    if last < 0:
        raise Malformed(f"field {column!r} has no assistant turn")
    if last == 0:
        raise Malformed(f"field {column!r} has no turn before the assistant reply")
    reply = turns[last][1]
    if not reply:
        raise Malformed(f"empty assistant reply in {column!r}")
    return turns[:last], reply


def _dialogue_turns(prefix: str) -> tuple[tuple[str, str], ...]:
    """'\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant:' -> user/assistant turns (HH-RLHF)."""
    turns: list[tuple[str, str]] = []
    for block in prefix.split("\n\n"):
        for speaker, role in (("Human:", "user"), (DIALOGUE_REPLY, "assistant")):
            if block.startswith(speaker):
                turns.append((role, block[len(speaker):].strip()))
                break
        else:
            if turns:  # a paragraph break inside a turn
                role, content = turns[-1]
                turns[-1] = (role, content + "\n\n" + block)
    if turns and turns[-1] == ("assistant", ""):
        turns.pop()  # the open reply header
    return tuple(turns)
