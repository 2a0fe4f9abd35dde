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
from securefed.membership import LEGACY_RULE, SamplingConfig, parties_per_round  # noqa: F401  (`sampling`)
from securefed.models.config import LoraConfig, ModelConfig
from securefed.privacy.config import PrivacyConfig, check_compatible
from securefed.robust.config import BoundConfig, RobustConfig, check_robust
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
    bound: BoundConfig = Field(default_factory=BoundConfig)  # party-side clip every decoded sum is checked against
    robust: RobustConfig = Field(default_factory=RobustConfig)  # Byzantine-robust rule (plain only)

    def section(self) -> Any:
        return getattr(self, self.protocol, None)


SECAGG_MIN_PARTIES = 3  # with 2, each party learns the other's update from the sum and its own


def protocol_floor(cfg: "RootConfig", n: int) -> str:
    """Why a round of n parties cannot finish under cfg's protocol ('' when it can). The config
    refuses settings whose every round would fail this; the runner asks it again per round (DP budget
    stops can leave fewer parties). Asks the protocol's own sizing rules rather than restating them."""
    agg = cfg.aggregation
    if agg.protocol == "secagg":
        if n < SECAGG_MIN_PARTIES:
            return f"secagg needs >= {SECAGG_MIN_PARTIES} parties a round (with 2, each learns the other's update)"
        try:
            agg.secagg.resolve(n)
        except ValueError as e:
            return f"aggregation.secagg: {e}"
    if agg.protocol == "he":
        from securefed.protocols.he import check_round_size  # threshold: t decryptors, a signing quorum

        try:
            check_round_size(agg.he, cfg.parties, n)
        except ValueError as e:
            return str(e)
    from securefed.membership import round_floor  # the parties' own floor on a round

    if n < round_floor(cfg):
        return f"a round of {n} is below sampling.min_round_size={cfg.sampling.min_round_size} (parties refuse it)"
    return ""


class EvaluationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    every: int = Field(1, ge=1, description="evaluate the global model every N rounds (and after the last)")
    max_examples: int = Field(200, ge=1)
    batch_size: int = Field(32, ge=1)
    max_new_tokens: int = Field(4, ge=1, description="tokens generated when scoring a labelled task")
    # auto: the held-out TEST split (data.test_fraction) when there is one, else the eval split
    split: Literal["auto", "test", "eval"] = "auto"
    # A deployment: each party's training loss and held-out metrics of the global model travel, as
    # weighted sums, inside the protected vector (securefed/deploy/round_report.py). They are not
    # covered by DP, so "auto" turns them off under a DP mechanism; "on" accepts that release.
    party_metrics: Literal["auto", "on", "off"] = "auto"


class DPOConfig(BaseModel):
    """The `dpo.*` section, read when task = "dpo" (federated value alignment)."""

    model_config = ConfigDict(extra="forbid")

    beta: float = Field(0.1, gt=0, le=100, allow_inf_nan=False,
                        description="DPO temperature: how far the policy may move from the reference")


class OutputConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    save_every_round: bool = False  # keep OUT/rounds/round-N/adapter for every round
    tensorboard: bool = False  # OUT/tensorboard event files, written each round (needs securefed[tensorboard])
    mlflow: bool = False  # MLflow params + per-round metrics (needs securefed[mlflow])
    mlflow_uri: str | None = None  # tracking URI; None: a file store in OUT/mlruns (no server)
    mlflow_experiment: str = Field("securefed", min_length=1)

    @model_validator(mode="after")
    def _trackers_installed(self) -> "OutputConfig":
        from securefed.reporting import mlflow_log, tensorboard

        for on, missing in ((self.tensorboard, tensorboard.missing), (self.mlflow, mlflow_log.missing)):
            if on and missing():
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
        selected = self.sampling.per_round(self.parties)
        too_few = protocol_floor(self, selected)
        if too_few:  # every round would train, then abort: refuse before any training
            size = f"parties = {self.parties}" if selected == self.parties else \
                f"sampling selects {selected} of {self.parties} parties a round"
            raise ValueError(f"{too_few}, but {size}: add parties, sample more or use protocol 'plain'")
        if self.evaluation.party_metrics == "on" and self.privacy.mechanism == "user-distributed":
            raise ValueError("evaluation.party_metrics 'on' cannot ride user-distributed DP's integer carrier; "
                             "use 'auto' or 'off'")
        secagg = self.aggregation.secagg
        check_compatible(self.privacy, self.aggregation.protocol, secagg.clip, secagg.precision_bits,
                         self.algorithm.name == "scaffold")
        amplified = self.privacy.sampling_amplification
        if amplified and (self.algorithm.name == "local" or self.simulation.backend != "inprocess"):
            # the draw must leave no trace in the run's files: Local writes each party's own adapter (changed
            # only when drawn), and the Ray pool reports which parties its actors trained
            raise ValueError("privacy.sampling_amplification needs a federated algorithm (not 'local') and "
                             "simulation.backend='inprocess': the secret draw would show in the run's files")
        check_robust(self)
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
        loc = ".".join(str(p) for p in e["loc"])
        got = e.get("input")
        shown = "" if isinstance(got, dict) else f" (got {got!r})"
        msg = e["msg"].removeprefix("Value error, ")  # a cross-section check names its own fields
        lines.append(f"{loc}: {msg}{shown}" if loc else f"{msg}{shown}")
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


def stored(data: dict[str, Any]) -> dict[str, Any]:
    """A config securefed wrote earlier (a run's config.json, a checkpoint's, federation.json's
    app.config), as the run that wrote it meant it: a setting added since, whose default behaves
    differently from what ran then, gets the old behaviour where it made a difference: no
    `sampling.rule` in a run that drew parties is numpy-choice; no `privacy.rotation` under
    user-distributed DP is numpy. Elsewhere a missing setting takes today's default (it changes nothing)."""
    out = dict(data)
    sampling, privacy = data.get("sampling"), data.get("privacy")
    if isinstance(sampling, dict) and "rule" not in sampling and _draws(data.get("parties", 4), sampling):
        out["sampling"] = {"rule": LEGACY_RULE, **sampling}
    if isinstance(privacy, dict) and "rotation" not in privacy and privacy.get("mechanism") == "user-distributed":
        out["privacy"] = {"rotation": "numpy", **privacy}
    return out


def _draws(parties: Any, sampling: dict[str, Any]) -> bool:
    """Whether a sampling section selects fewer than all parties (unreadable values: assume it does)."""
    try:
        return parties_per_round(int(parties), sampling.get("count"), sampling.get("fraction")) < int(parties)
    except (TypeError, ValueError):
        return True


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> RootConfig:
    """Read TOML (or the JSON a run saved, read as `stored`), apply overrides, validate."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} not found")
        try:
            text = p.read_text(encoding="utf-8")
            data = stored(json.loads(text)) if p.suffix == ".json" else tomllib.loads(text)
        except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"config file {str(p)!r} is not valid {p.suffix.lstrip('.') or 'TOML'}: {e}") from None
    return from_dict(apply_overrides(data, overrides))
