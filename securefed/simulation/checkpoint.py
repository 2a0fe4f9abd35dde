"""Atomic checkpoints of a federation's state; each stores the resolved config beside it.

Layout:  OUT/checkpoints/round-0003/{state.pt, config.json}   OUT/checkpoints/LATEST -> "round-0003"
A checkpoint directory is written under a temporary name and renamed into place, and LATEST is
replaced atomically after it, so a crash at any point leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from securefed.algorithms.base import ClientState, ServerState
from securefed.atomic import atomic_directory, atomic_write_text
from securefed.config import RootConfig, from_dict, stored
from securefed.errors import ConfigError, UserError

FORMAT = 1
# Settings a resumed run may change: where files are, where it runs, what it logs and how often it
# scores. Everything else decides the rounds still to come, so a resume with another value would
# silently splice two different runs.
RESUME_FREE = ("model.name_or_path", "model.device", "data.source", "output.", "simulation.",
               "evaluation.every", "evaluation.batch_size")


@dataclass(frozen=True)
class Checkpoint:
    completed_rounds: int
    server: ServerState
    clients: Mapping[str, ClientState]
    config: dict[str, Any]


def _server_dict(s: ServerState) -> dict[str, Any]:
    return {"round": s.round, "params": dict(s.params), "control": s.control, "opt": {k: dict(v) for k, v in s.opt.items()}}


def _client_dict(c: ClientState) -> dict[str, Any]:
    return {"control": c.control, "own_params": c.own_params}


def save_checkpoint(out_dir: Path, ckpt: Checkpoint, keep_previous: bool = False) -> Path:
    root = Path(out_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"round-{ckpt.completed_rounds:04d}"
    with atomic_directory(root / name) as tmp:
        torch.save(
            {
                "format": FORMAT,
                "completed_rounds": ckpt.completed_rounds,
                "server": _server_dict(ckpt.server),
                "clients": {pid: _client_dict(c) for pid, c in ckpt.clients.items()},
            },
            tmp / "state.pt",
        )
        (tmp / "config.json").write_text(json.dumps(ckpt.config, indent=2), encoding="utf-8")
    previous = latest_name(out_dir)
    atomic_write_text(root / "LATEST", name)
    if previous and previous != name and not keep_previous:
        shutil.rmtree(root / previous, ignore_errors=True)
    return root / name


def latest_name(out_dir: Path) -> str | None:
    pointer = Path(out_dir) / "checkpoints" / "LATEST"
    return pointer.read_text(encoding="utf-8").strip() if pointer.exists() else None


def load_checkpoint(out_dir: Path) -> Checkpoint:
    name = latest_name(out_dir)
    if name is None:
        raise UserError(f"{out_dir}: no checkpoint to resume from (checkpoints/LATEST missing)")
    path = Path(out_dir) / "checkpoints" / name
    try:
        raw = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, RuntimeError, json.JSONDecodeError) as e:
        raise UserError(f"checkpoint {path} is unreadable: {e}") from None
    if raw.get("format") != FORMAT:
        raise UserError(f"checkpoint {path} has format {raw.get('format')}, expected {FORMAT}")
    s = raw["server"]
    server = ServerState(round=s["round"], params=s["params"], control=s["control"], opt=s["opt"])
    clients = {pid: ClientState(control=c["control"], own_params=c["own_params"]) for pid, c in raw["clients"].items()}
    return Checkpoint(raw["completed_rounds"], server, clients, config)


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, Mapping) else {f"{prefix}{k}": v})
    return out


def _effective(cfg: RootConfig) -> dict[str, Any]:
    """The flat config, less the settings that change nothing in it: the selection rule when every
    party is in every round, the rotation rule without user-distributed DP."""
    flat = _flat(cfg.model_dump(mode="json"))
    if cfg.sampling.per_round(cfg.parties) == cfg.parties:
        flat.pop("sampling.rule")
    if cfg.privacy.mechanism != "user-distributed":
        flat.pop("privacy.rotation")
    return flat


def check_same_run(ckpt_config: Mapping[str, Any], cfg: RootConfig, out_dir: Path) -> None:
    """Raise UserError (one line) unless `cfg` continues the run the checkpoint's config started,
    up to RESUME_FREE. The checkpoint's config is read as `stored`: a setting added since takes the
    behaviour the run had (a run from before `sampling.rule` keeps numpy-choice)."""
    try:
        was = _effective(from_dict(stored(dict(ckpt_config))))
    except ConfigError as e:
        raise UserError(f"{out_dir}: the checkpoint's config does not load today ({e}); start another --out") from None
    now = _effective(cfg)
    changed = [k for k in sorted(set(was) | set(now))
               if was.get(k) != now.get(k) and not any(k == f or (f.endswith(".") and k.startswith(f))
                                                      for f in RESUME_FREE)]
    if changed:
        shown = ", ".join(f"{k} ({was.get(k)!r} there, {now.get(k)!r} here)" for k in changed[:3])
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        raise UserError(f"{out_dir}: the checkpoint was written by another config: {shown}{more}; resume with "
                        "its config (--set the values it had) or start another --out")
