"""A deployed party's work on its current round, kept on disk beside its client state, so that a party
process restarted between attempts of a round sends again what it sent instead of training again.

Why a retry must not train again, even across a restart:
- threshold `he` pins one input per party a round in the party's ledger; a second, different input is
  refused, and if the party was in the signed contributor set the round is spent;
- example-level DP-SGD would spend the round's budget twice (and the ledger would say so);
- SCAFFOLD's client control variate (and Local's own adapter) would move twice for one round;
- a distributed-DP noise share drawn twice for one selection would hand the server two draws to
  average (the same selection gets the same input, noise share included).

The record is written in the same file, in the same atomic write, as the client state that training
moved: after a crash a party has either both (and re-sends) or neither (and trains the round afresh).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

from securefed.algorithms.base import ClientState
from securefed.protocols.base import PartyInput
from securefed.training.sft import LocalResult

Groups = dict[str, Mapping[str, torch.Tensor] | None]


@dataclass(frozen=True)
class Trained:
    """The first attempt's training of `round` on the global payload with SHA-256 `digest`."""

    round: int
    digest: bytes
    result: LocalResult
    heldout: dict[str, float] | None  # the received global model on the party's held-out rows


@dataclass(frozen=True)
class Sent:
    """The input sent for (round, digest, selected party ids, max weight), and the party's log values."""

    key: tuple[Any, ...]
    input: PartyInput
    report: dict[str, Any]


def sent_key(round: int, digest: bytes, party_ids: tuple[str, ...], max_weight: float) -> tuple[Any, ...]:
    return (round, digest.hex(), tuple(party_ids), max_weight)


def to_groups(state: ClientState, trained: Trained | None, sent: Sent | None) -> tuple[Groups, dict[str, Any]]:
    """(tensor groups, JSON meta) for fl_apps.pack_tensors: the client state plus this round's work."""
    groups: Groups = {"control": state.control, "own": state.own_params}
    meta: dict[str, Any] = {}
    if trained is not None:
        r = trained.result
        groups |= {"delta": r.delta, "control_delta": r.control_delta}
        meta["trained"] = {"round": trained.round, "digest": trained.digest.hex(), "steps": r.steps,
                           "train_loss": r.train_loss, "heldout": trained.heldout}
    if sent is not None:
        inp = sent.input
        groups["sent"] = {"delta": torch.from_numpy(inp.delta)} | (
            {} if inp.control_delta is None else {"control_delta": torch.from_numpy(inp.control_delta)})
        meta["sent"] = {"key": list(sent.key), "weight": inp.weight, "report": sent.report}
    return groups, meta


def from_groups(groups: Mapping[str, dict[str, torch.Tensor]], meta: Mapping[str, Any]
                ) -> tuple[ClientState, Trained | None, Sent | None]:
    """The inverse of to_groups; a state file written before this record existed has neither part."""
    state = ClientState(control=groups.get("control"), own_params=groups.get("own"))
    trained = sent = None
    if (t := meta.get("trained")) is not None:
        result = LocalResult(groups["delta"], groups.get("control_delta"), state, int(t["steps"]), float(t["train_loss"]))
        trained = Trained(int(t["round"]), bytes.fromhex(t["digest"]), result, t["heldout"])
    if (s := meta.get("sent")) is not None:
        k = s["key"]
        g = groups["sent"]
        control = g["control_delta"].numpy() if "control_delta" in g else None
        inp = PartyInput(g["delta"].numpy().astype(np.float32, copy=False), control, float(s["weight"]))
        sent = Sent((int(k[0]), str(k[1]), tuple(k[2]), k[3]), inp, dict(s["report"]))
    return state, trained, sent
