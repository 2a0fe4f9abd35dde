"""The one typed root config: loaded from TOML, `--set dotted.key=value` overrides, validated on load.

Every error names the dotted field, what was wrong and, for choices, the allowed values.
The resolved config is saved in every run directory and checkpoint (`config.json`).
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from securefed.algorithms.config import AlgorithmConfig
from securefed.config_hints import unknown_key_message
from securefed.data.config import DataConfig
from securefed.errors import ConfigError
from securefed.membership import SamplingConfig, parties_per_round  # noqa: F401  (the `sampling` section)
from securefed.models.config import LoraConfig, ModelConfig
from securefed.privacy.config import PrivacyConfig, check_compatible
from securefed.simulation.backends.config import SimulationConfig
from securefed.training.config import TrainingConfig


def _protocol_sections() -> dict[str, Any]:
    # Each protocol owns its config model; the root config nests them under `aggregation.<name>`.
    from securefed.protocols.he.config import HEConfig
    from securefed.protocols.secagg.config import SecAggConfig

    return {"secagg": SecAggConfig, "he": HEConfig}


_SECTIONS = _protocol_sections()


class AggregationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    protocol: Literal["plain", "secagg", "he"] = "plain"
    secagg: _SECTIONS["secagg"] = Field(default_factory=_SECTIONS["secagg"])  # type: ignore[valid-type]
    he: _SECTIONS["he"] = Field(default_factory=_SECTIONS["he"])  # type: ignore[valid-type]

    def section(self) -> Any:
        return getattr(self, self.protocol, None)


class EvaluationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    every: int = Field(1, ge=1, description="evaluate the global model every N rounds (and after the last)")
    max_examples: int = Field(200, ge=1)
    batch_size: int = Field(32, ge=1)
    max_new_tokens: int = Field(4, ge=1, description="tokens generated when scoring a labelled task")
    # auto: the held-out TEST split (data.test_fraction) when there is one, else the eval split
    split: Literal["auto", "test", "eval"] = "auto"


class DPOConfig(BaseModel):
    """The `dpo.*` section, read when task = "dpo" (federated value alignment)."""

    model_config = ConfigDict(extra="forbid")

    beta: float = Field(0.1, gt=0, le=100, allow_inf_nan=False,
                        description="DPO temperature: how far the policy may move from the reference")


class OutputConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    save_every_round: bool = False  # keep OUT/rounds/round-N/adapter for every round
    tensorboard: bool = False  # OUT/tensorboard event files, written each round (needs securefed[tensorboard])

    @model_validator(mode="after")
    def _tensorboard_installed(self) -> "OutputConfig":
        from securefed.reporting.tensorboard import missing

        if self.tensorboard and missing():
            raise ValueError(missing())
        return self


class RootConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: Literal["sft", "dpo"] = "sft"
    parties: int = Field(4, ge=1, le=100_000)
    rounds: int = Field(5, ge=1)
    seed: int = 0
    federation_id: str = Field("sim", min_length=1, max_length=64)
    model: ModelConfig = Field(default_factory=ModelConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    aggregation: AggregationConfig = Field(default_factory=AggregationConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    dpo: DPOConfig = Field(default_factory=DPOConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    simulation: SimulationConfig = Field(default_factory=SimulationConfig)  # inprocess or a Ray actor pool

    @model_validator(mode="after")
    def _cross_section(self) -> "RootConfig":
        if self.sampling.count is not None and self.sampling.count > self.parties:
            raise ValueError(f"sampling.count ({self.sampling.count}) exceeds parties ({self.parties})")
        if self.task == "dpo" and self.privacy.mechanism == "example" and self.privacy.grad_sample_mode == "ghost":
            # A DPO privacy unit is a pair of rows (chosen, rejected): its gradient is clipped as one,
            # which needs per-row gradients (hooks); ghost clipping only has per-row norms.
            raise ValueError("privacy.grad_sample_mode: 'ghost' cannot clip a DPO pair; use 'hooks' or 'auto' "
                             "(task 'dpo' with privacy.mechanism 'example' runs in hooks mode)")
        if self.aggregation.protocol == "he":
            from securefed.protocols.he import check_round_size  # threshold: t decryptors, a signing quorum

            check_round_size(self.aggregation.he, self.parties, self.sampling.per_round(self.parties))
        selected = self.sampling.per_round(self.parties)
        if self.aggregation.protocol != "plain" and selected < self.sampling.min_round_size:
            raise ValueError(f"sampling invites {selected} parties a round, below sampling.min_round_size="
                             f"{self.sampling.min_round_size}: parties would refuse every round")
        secagg = self.aggregation.secagg
        check_compatible(self.privacy, self.aggregation.protocol, secagg.clip, secagg.precision_bits,
                         self.algorithm.name == "scaffold")
        amplified = self.privacy.sampling_amplification
        if amplified and (self.algorithm.name == "local" or self.simulation.backend != "inprocess"):
            # the draw must leave no trace in the run's files: Local writes each party's own adapter (changed
            # only when drawn), and the Ray pool reports which parties its actors trained
            raise ValueError("privacy.sampling_amplification needs a federated algorithm (not 'local') and "
                             "simulation.backend='inprocess': the secret draw would show in the run's files")
        return self

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        hint = unknown_key_message(RootConfig, e["loc"]) if e["type"] == "extra_forbidden" else None
        if hint is not None:
            lines.append(hint)
            continue
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        got = e.get("input")
        shown = "" if isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"{loc}: {e['msg']}{shown}")
    return "; ".join(lines)


def parse_override(item: str) -> tuple[list[str], Any]:
    """'a.b.c=value' -> (['a','b','c'], value); the value is read as a TOML literal if it is one
    (numbers, booleans, quoted strings, arrays), otherwise taken as a bare string."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected dotted.key=value")
    key, raw = item.split("=", 1)
    parts = [p.strip() for p in key.strip().split(".")]
    if not all(parts):
        raise ConfigError(f"--set {item!r}: empty key segment")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    for item in overrides:
        parts, value = parse_override(item)
        node = data
        for p in parts[:-1]:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {p!r} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return data


def from_dict(data: dict[str, Any]) -> RootConfig:
    try:
        return RootConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"invalid config: {_format_errors(e)}") from None


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> RootConfig:
    """Read TOML (or the JSON a run saved), apply overrides, validate."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} not found")
        try:
            text = p.read_text(encoding="utf-8")
            data = json.loads(text) if p.suffix == ".json" else tomllib.loads(text)
        except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"config file {str(p)!r} is not valid {p.suffix.lstrip('.') or 'TOML'}: {e}") from None
    return from_dict(apply_overrides(data, overrides))
