"""The shape of an FL algorithm: a bundle of pure functions over frozen state (fedjax style).

Client side (runs on each party):
    grad_correction(params, grads, ctx, client_state) -> grads   # applied after backward, per step
    step_correction(ctx, client_state) -> s                      # after each optimizer step: w -= lr * s
    client_finish(client_state, ctx, delta, steps, lr) -> (client_state', control_delta | None)
Server side (runs on the coordinator, sees only the Aggregate):
    init_server(params) -> ServerState
    server_update(state, aggregate) -> ServerState

Nothing here mutates its inputs; optimiser moments live in `ServerState.opt`, not on an object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch

from securefed.aggregate import Aggregate, TensorDict


@dataclass(frozen=True)
class ServerState:
    round: int  # number of server updates applied so far
    params: Mapping[str, torch.Tensor]  # the global adapter x (float32)
    control: Mapping[str, torch.Tensor] | None = None  # SCAFFOLD's server control variate c
    opt: Mapping[str, Mapping[str, torch.Tensor]] = field(default_factory=dict)  # e.g. {"m": ..., "v": ...}


@dataclass(frozen=True)
class ClientState:
    """State a party keeps between the rounds it takes part in (never sent as is)."""

    control: Mapping[str, torch.Tensor] | None = None  # SCAFFOLD's c_i
    own_params: Mapping[str, torch.Tensor] | None = None  # Local: the party's own adapter between rounds


@dataclass(frozen=True)
class ClientContext:
    """What a party receives from the server for one round."""

    global_params: Mapping[str, torch.Tensor]
    server_control: Mapping[str, torch.Tensor] | None = None


GradCorrection = Callable[[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor], ClientContext, ClientState], TensorDict]
ClientFinish = Callable[
    [ClientState, ClientContext, Mapping[str, torch.Tensor], int, float], tuple[ClientState, TensorDict | None]
]


@dataclass(frozen=True)
class Algorithm:
    name: str
    init_server: Callable[[Mapping[str, torch.Tensor]], ServerState]
    server_update: Callable[[ServerState, Aggregate], ServerState]
    init_client: Callable[[Mapping[str, torch.Tensor]], ClientState]
    client_finish: ClientFinish
    grad_correction: GradCorrection | None = None  # None: plain local optimisation
    # A drift term applied in parameter space after each optimizer step (w <- w - lr * s). SCAFFOLD's
    # correction lives here: with an adaptive local optimiser (AdamW) adding c - c_i to the gradient
    # would be rescaled by Adam's second moment, while c and c_i are estimated in update units.
    step_correction: Callable[[ClientContext, ClientState], TensorDict] | None = None
    uses_control: bool = False  # True: parties send a control delta (SCAFFOLD)
    aggregates: bool = True  # False for Local: no federation, each party keeps its own adapter


def clone(tensors: Mapping[str, torch.Tensor]) -> TensorDict:
    return {k: v.detach().clone() for k, v in tensors.items()}


def zeros_like(tensors: Mapping[str, torch.Tensor]) -> TensorDict:
    return {k: torch.zeros_like(v) for k, v in tensors.items()}


def no_client_state(params: Mapping[str, torch.Tensor]) -> ClientState:
    return ClientState()


def finish_without_control(
    state: ClientState, ctx: ClientContext, delta: Mapping[str, torch.Tensor], steps: int, lr: float
) -> tuple[ClientState, TensorDict | None]:
    return state, None


def check_aggregate(aggregate: object) -> Aggregate:
    # The defining invariant: a server step takes an Aggregate, nothing that could hold per-party data.
    if not isinstance(aggregate, Aggregate):
        raise TypeError(f"server_update takes an Aggregate, got {type(aggregate).__name__}")
    return aggregate
