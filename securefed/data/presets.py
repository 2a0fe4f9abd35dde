"""Named data presets: which columns play which role, and which template turns a row into text.

A preset is declarative; `convert.py` interprets it. The registry is the data layer's only mutable
global: built-ins are registered at import, users may add their own with `register_preset`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from securefed.data.templates import (
    INSTRUCTION_TEMPLATE,
    INSTRUCTION_WITH_INPUT_TEMPLATE,
    check_template,
)
from securefed.errors import ConfigError

PresetKind = Literal["instruction", "chat", "classification", "preference", "dialogue_preference"]

# kind -> (required roles, optional roles). A role is looked up in a row through the preset's
# (possibly overridden) role -> column mapping.
ROLES: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] = MappingProxyType(
    {
        "instruction": (("instruction", "output"), ("input",)),
        "chat": (("messages",), ()),
        "classification": (("text", "label"), ()),
        "preference": (("chosen", "rejected"), ("prompt",)),
        "dialogue_preference": (("chosen", "rejected"), ()),
    }
)

# Placeholders each kind's prompt template may use ({labels} = "a, b or c" from the label list).
TEMPLATE_FIELDS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "instruction": frozenset({"instruction", "input"}),
        "classification": frozenset({"text", "labels"}),
    }
)
PREFERENCE_KINDS = frozenset({"preference", "dialogue_preference"})


@dataclass(frozen=True)
class Preset:
    """How to read one data set.

    `fields`: role -> column name. `template`: the prompt template (for instruction data: the one used
    when the row has an input); `template_no_input`: instruction rows with an empty input.
    `response_template`: classification responses (the leading space keeps the label a separate
    word after "Answer:"). `labels`: class labels, in class-index order (an integer label in the data
    is read as an index into this list). `hub_id`/`hub_split`: where `source="default"` loads it from.
    """

    kind: PresetKind
    fields: Mapping[str, str]
    template: str | None = None
    template_no_input: str | None = None
    response_template: str = " {label}"
    labels: tuple[str, ...] | None = None
    hub_id: str | None = None
    hub_split: str | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ROLES:
            raise ValueError(f"unknown preset kind {self.kind!r}; known: {', '.join(ROLES)}")
        # A read-only copy, so a registered preset cannot change behind the registry's back.
        object.__setattr__(self, "fields", MappingProxyType(dict(self.fields)))
        required, optional = ROLES[self.kind]
        unknown = set(self.fields) - set(required) - set(optional)
        if unknown:
            raise ValueError(f"preset roles {sorted(unknown)} are not roles of kind {self.kind!r}")
        missing = set(required) - set(self.fields)
        if missing:
            raise ValueError(f"preset of kind {self.kind!r} lacks roles {sorted(missing)}")
        if self.kind in TEMPLATE_FIELDS:
            if self.template is None:
                raise ValueError(f"preset of kind {self.kind!r} needs a template")
            for t in (self.template, self.template_no_input):
                if t is not None:
                    _check_preset_template(t, TEMPLATE_FIELDS[self.kind], "template")
        elif self.template is not None or self.template_no_input is not None:
            raise ValueError(f"preset of kind {self.kind!r} takes no template")
        if self.kind == "classification":
            _check_preset_template(self.response_template, {"label"}, "response template")
        if self.labels is not None:
            object.__setattr__(self, "labels", tuple(self.labels))

    def role_columns(self, overrides: Mapping[str, str]) -> dict[str, str]:
        """The preset mapping with `data.fields` overrides applied (ConfigError on unknown roles)."""
        required, optional = ROLES[self.kind]
        known = set(required) | set(optional)
        for role, column in overrides.items():
            if role not in known:
                raise ConfigError(
                    f"data.fields.{role}: not a role of this preset; roles: {', '.join(sorted(known))}"
                )
            if not isinstance(column, str) or not column:
                raise ConfigError(f"data.fields.{role}: must be a non-empty column name")
        return {**self.fields, **overrides}


def _check_preset_template(template: str, allowed: Iterable[str], what: str) -> None:
    # A bad built-in or programmatic preset is a programming error (ValueError), not user input.
    try:
        check_template(template, allowed, what=f"preset {what}")
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


_PRESETS: dict[str, Preset] = {}


def register_preset(name: str, preset: Preset) -> None:
    """Add a preset under `name`; raises ValueError if the name is taken."""
    if not isinstance(preset, Preset):
        raise TypeError(f"register_preset needs a Preset, got {type(preset).__name__}")
    if not name or name != name.strip():
        raise ValueError(f"preset name {name!r} must be non-empty without surrounding spaces")
    if name in _PRESETS:
        raise ValueError(f"preset {name!r} is already registered")
    _PRESETS[name] = preset


def get_preset(name: str) -> Preset:
    """The preset registered as `name`; ConfigError listing the known names otherwise."""
    try:
        return _PRESETS[name]
    except KeyError:
        raise ConfigError(
            f"data.preset: unknown preset {name!r}; known: {', '.join(preset_names())}"
        ) from None


def preset_names() -> list[str]:
    return sorted(_PRESETS)


# Column signatures -> preset, most specific first, for `preset=None` on a file or hub source.
_SIGNATURES: tuple[tuple[frozenset[str], str], ...] = (
    (frozenset({"messages"}), "chat"),
    (frozenset({"prompt", "chosen", "rejected"}), "ultrafeedback"),
    (frozenset({"chosen", "rejected"}), "hh-rlhf"),
    (frozenset({"instruction", "output"}), "alpaca"),
    (frozenset({"input", "output"}), "medalpaca"),
    (frozenset({"Sentiment", "Headline"}), "financial-phrasebank"),
    (frozenset({"text", "label"}), "classification"),
)


def infer_preset(columns: Iterable[str], origin: str) -> str:
    """Pick a built-in preset from the column names of the first row."""
    cols = set(columns)
    for signature, name in _SIGNATURES:
        if signature <= cols:
            return name
    raise ConfigError(
        f"data.preset: cannot infer a preset from the columns {sorted(cols)} of {origin}; "
        f"set data.preset (known: {', '.join(preset_names())}) and data.fields if needed"
    )


_ALPACA_FIELDS = {"instruction": "instruction", "input": "input", "output": "output"}


def _instruction(fields: Mapping[str, str], hub_id: str, description: str) -> Preset:
    return Preset(
        kind="instruction",
        fields=fields,
        template=INSTRUCTION_WITH_INPUT_TEMPLATE,
        template_no_input=INSTRUCTION_TEMPLATE,
        hub_id=hub_id,
        description=description,
    )


def _register_builtins() -> None:
    register_preset(
        "default",
        Preset(
            kind="classification",
            fields={"text": "text", "label": "label"},
            template="Review: {text}\nSentiment:",
            labels=("negative", "neutral", "positive"),
            description="embedded synthetic review sentiment task (source='default')",
        ),
    )
    register_preset("alpaca", _instruction(_ALPACA_FIELDS, "tatsu-lab/alpaca", "Stanford Alpaca"))
    register_preset(
        "alpaca-gpt4",
        _instruction(_ALPACA_FIELDS, "vicgalle/alpaca-gpt4", "Alpaca prompts, GPT-4 answers"),
    )
    register_preset(
        "fingpt-sentiment",
        _instruction(_ALPACA_FIELDS, "FinGPT/fingpt-sentiment-train", "FinGPT financial sentiment"),
    )
    # The flashcards put the question in `input`; their `instruction` column is one constant
    # sentence, so it is left out and the question becomes the instruction.
    register_preset(
        "medalpaca",
        _instruction(
            {"instruction": "input", "output": "output"},
            "medalpaca/medical_meadow_medical_flashcards",
            "MedAlpaca medical flashcards",
        ),
    )
    register_preset(
        "code-alpaca",
        _instruction(_ALPACA_FIELDS, "lucasmccabe-lmi/CodeAlpaca-20k", "Code Alpaca 20k"),
    )
    register_preset(
        "mathinstruct",
        _instruction(
            {"instruction": "instruction", "output": "output"}, "TIGER-Lab/MathInstruct", "MathInstruct"
        ),
    )
    register_preset(
        "financial-phrasebank",
        Preset(
            kind="classification",
            fields={"text": "Headline", "label": "Sentiment"},
            template=(
                "What is the sentiment of this news? Answer positive, neutral or negative.\n"
                "News: {text}\nAnswer:"
            ),
            labels=("negative", "neutral", "positive"),
            description="Financial PhraseBank CSV (Sentiment,Headline); set source to the file",
        ),
    )
    register_preset(
        "chat",
        Preset(kind="chat", fields={"messages": "messages"}, description="chat `messages` lists"),
    )
    register_preset(
        "classification",
        Preset(
            kind="classification",
            fields={"text": "text", "label": "label"},
            template="Classify the text. Answer {labels}.\nText: {text}\nAnswer:",
            description="generic text/label rows; labels from data.labels or the data",
        ),
    )
    register_preset(
        "ultrafeedback",
        Preset(
            kind="preference",
            fields={"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"},
            hub_id="HuggingFaceH4/ultrafeedback_binarized",
            hub_split="train_prefs",
            description="UltraFeedback binarized (chosen/rejected chat lists)",
        ),
    )
    register_preset(
        "hh-rlhf",
        Preset(
            kind="dialogue_preference",
            fields={"chosen": "chosen", "rejected": "rejected"},
            hub_id="Anthropic/hh-rlhf",
            description="Anthropic HH-RLHF (full Human/Assistant dialogues)",
        ),
    )


_register_builtins()
