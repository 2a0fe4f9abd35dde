"""Differential privacy in a deployed federation: the simulation's `PrivacyEngine`, split by who holds what.

- `example` (DP-SGD) lives entirely on the party. It plans its noise from its own record count and the
  public selection, checks its budget before training (a party whose budget is spent declines the
  round, which makes it a dropout for the protocol), accounts every round it trained in (even when its
  input then dropped: its records were touched) and keeps its ledger in `<kit>/state/privacy.json`,
  written atomically. Its epsilon is logged on the party's side; the server never sees it.
- `user-central` / `user-distributed`: each party clips its update (distributed: rotates, rounds and
  adds its Skellam share too) in `PartyPrivacy.protect`; the server checks the selection against the
  budgets, adds the central noise or decodes the distributed sum, and accounts every contributor. The
  server's ledger travels in its checkpoint, so a restarted coordinator keeps counting.

A deployment always draws DP noise and Poisson samples from the OS CSPRNG (`secure_mode` is forced
on): the simulation's seeds come from the public config, and anyone holding the config could
regenerate that noise and subtract it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

from securefed.atomic import atomic_write_text
from securefed.config import RootConfig
from securefed.deploy.apps import RoundDeclined
from securefed.errors import ConfigError
from securefed.privacy.engine import PrivacyEngine, build_engine
from securefed.protocols.base import PartyInput, ProtocolAbort, RoundContext, VectorSum
from securefed.transport.logfmt import kv

_log = logging.getLogger("securefed.deploy.privacy")


def deployment_config(cfg: RootConfig) -> RootConfig:
    """The config a deployed app runs: DP noise and sampling from the CSPRNG whenever DP is on."""
    if cfg.privacy.sampling_amplification:
        # A coordinator retries an aborted round with a fresh selection and picks among available
        # parties: the draw is no longer Poisson, and the amplified accounting would not hold.
        raise ConfigError("privacy.sampling_amplification is supported in simulation only (a deployed "
                          "coordinator's retried, availability-filtered selection is not Poisson sampling)")
    if not cfg.privacy.enabled or cfg.privacy.secure_mode:
        return cfg
    return cfg.model_copy(update={"privacy": cfg.privacy.model_copy(update={"secure_mode": True})})


class PartyPrivacy:
    """A deployed party's side of the mechanism; a pass-through when `privacy.mechanism = "none"`."""

    def __init__(self, cfg: RootConfig, party_ids: Sequence[str], party_id: str, records: int, vector_len: int,
                 state_dir: Path, selection_seed: int | None = None) -> None:
        self.pid = party_id
        self.mechanism = cfg.privacy.mechanism
        self.path = Path(state_dir) / "privacy.json"
        self.engine: PrivacyEngine | None = None
        self.rows: list[dict[str, Any]] = []
        if cfg.privacy.enabled:
            self.engine = build_engine(cfg, party_ids, {party_id: records}, vector_len, accounted=(party_id,),
                                       selection_seed=selection_seed)
            self.rows = _load_rows(self.path)
            self.engine.restore(self.rows)

    @property
    def example(self) -> bool:
        return self.mechanism == "example"

    def admit(self, round: int):
        """Example-level: the DP-SGD parameters for this round, or RoundDeclined when training would take
        this party past its budget and `on_budget_exhausted = "stop"`."""
        if not self.engine.admit_round(round, (self.pid,)):
            raise RoundDeclined(f"differential-privacy budget spent: round {round + 1} would take epsilon past "
                                f"privacy.target_epsilon={self.engine.cfg.target_epsilon}")
        return self.engine.dp_sgd_params(self.pid, round)

    def record(self, round: int, noise_multiplier: float, sample_rate: float, steps: int) -> dict[str, Any]:
        """Account a round this party trained in; the ledger is on disk before the update leaves."""
        self.engine.record_example(self.pid, noise_multiplier, sample_rate, steps)
        row = {"round": round, **self.engine.close_round()}
        self.rows.append(row)
        atomic_write_text(self.path, json.dumps(self.rows, indent=1) + "\n")
        _log.info(kv("dp_epsilon", round=round, epsilon=f"{row['dp_epsilon_max']:.4g}",
                     delta=row["dp_delta"]))
        return row

    def protect(self, round: int, ctx: RoundContext, inp: PartyInput) -> PartyInput:
        """User-level mechanisms: clip the whole update (distributed: and encode it with this party's
        noise share, for exactly the selected parties of ctx); unchanged otherwise."""
        if self.engine is None or not self.engine.cfg.user_level:
            return inp
        self.engine.admit_round(round, ctx.party_ids)  # the round's distributed plan (n = selected parties)
        return self.engine.party_input(inp.delta, inp.control_delta, inp.weight, ctx.max_weight)

    def epsilon(self) -> float:
        return self.engine.epsilon_of(self.pid) if self.engine is not None else 0.0


class ServerPrivacy:
    """The coordinator's side: budgets, central noise / distributed decoding, user-level accounting."""

    def __init__(self, cfg: RootConfig, party_ids: Sequence[str], vector_len: int,
                 selection_seed: int | None = None) -> None:
        # Example-level DP is the parties' business: the server knows neither their record counts nor
        # their spends, so it has nothing to do.
        self.engine = (build_engine(cfg, party_ids, {}, vector_len, selection_seed=selection_seed)
                       if cfg.privacy.user_level else None)
        self.rows: list[dict[str, Any]] = []

    def admit(self, round: int, chosen: tuple[str, ...]) -> tuple[str, ...]:
        if self.engine is None:
            return chosen
        admitted = self.engine.admit_round(round, chosen)
        if not admitted:
            raise ProtocolAbort("every selected party's differential-privacy budget is spent")
        return admitted

    def finish(self, round: int, vsum: VectorSum) -> tuple[VectorSum, dict[str, Any]]:
        """The protocol's sum -> the noised (or decoded) sum the algorithm steps on, and the metrics."""
        if self.engine is None:
            return vsum, {}
        out = self.engine.finish_round(vsum)
        row = {"round": round, **self.engine.close_round()}
        self.rows.append(row)
        stats = {k: v for k, v in out.stats.items()
                 if k in ("dp_noise_std", "dp_under_noised", "dp_sensitivity_inflation") or k.startswith("dp_z_vs_")}
        return out, {**{k: v for k, v in row.items() if k != "round"}, **stats}

    def ledger(self) -> str:
        return json.dumps(self.rows)

    def restore(self, ledger: str) -> None:
        if self.engine is None:
            return
        self.rows = json.loads(ledger)
        self.engine.restore(self.rows)


def _load_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ValueError("not a list of round records")
        return rows
    except ValueError as e:
        # Refuse to start rather than forget spends: a lost ledger would silently reset the budget.
        raise ConfigError(f"{path}: unreadable privacy ledger ({e}); restore it from a backup") from None
