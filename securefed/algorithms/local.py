"""Local: each party trains alone on its own data, nothing is aggregated (OpenFedLLM's baseline).

The party's own adapter persists in its ClientState between rounds; the server keeps the initial
adapter and never steps, so no protocol runs.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Mapping

import torch

from securefed.aggregate import Aggregate, TensorDict
from securefed.algorithms.base import Algorithm, ClientContext, ClientState, ServerState, clone
from securefed.algorithms.averaging import init_server


def init_client(params: Mapping[str, torch.Tensor]) -> ClientState:
    return ClientState(own_params=clone(params))


def client_finish(
    state: ClientState, ctx: ClientContext, delta: Mapping[str, torch.Tensor], steps: int, lr: float
) -> tuple[ClientState, TensorDict | None]:
    return replace(state, own_params={k: ctx.global_params[k] + delta[k] for k in delta}), None


def _never(state: ServerState, aggregate: Aggregate) -> ServerState:
    raise RuntimeError("Local does not aggregate; the server step must not run")


def local() -> Algorithm:
    return Algorithm("local", init_server, _never, init_client, client_finish, aggregates=False)
