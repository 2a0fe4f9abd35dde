"""SCAFFOLD: Karimireddy et al. 2020, "Stochastic Controlled Averaging for Federated Learning", Alg. 1.

Client i, K local steps with learning rate eta_l, from x with server control c and its own c_i:
    y_i <- y_i - eta_l * (g_i(y_i) - c_i + c)            (corrected gradient, line 10)
      implemented as: y_i <- OptimizerStep(y_i, g_i) - eta_l * (c - c_i), identical for SGD; with AdamW
      the drift term stays in update units, as c and c_i are estimated in those units (option II)
    c_i+ = c_i - c + (x - y_i) / (K * eta_l)              (option II, line 12)
    sends Delta y_i = y_i - x and Delta c_i = c_i+ - c_i
Server, over the sampled set S of N parties in all:
    x <- x + eta_g * (1/|S|) * sum_{i in S} Delta y_i     (line 16)
    c <- c + (1/N) * sum_{i in S} Delta c_i = c + |S|/N * mean(Delta c_i)   (line 17)
The server sees only the Aggregate, so the plain mean of line 16 comes from each party sending
weight 1 (algorithm.weighting = "uniform", SCAFFOLD's default); "samples" weights Delta y_i by sample
count instead (OpenFedLLM's variant). Control deltas are summed unweighted either way.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Mapping

import torch

from securefed.aggregate import Aggregate, TensorDict
from securefed.algorithms.base import (
    Algorithm,
    ClientContext,
    ClientState,
    ServerState,
    check_aggregate,
    clone,
    zeros_like,
)


def init_server(params: Mapping[str, torch.Tensor]) -> ServerState:
    return ServerState(round=0, params=clone(params), control=zeros_like(params))


def init_client(params: Mapping[str, torch.Tensor]) -> ClientState:
    return ClientState(control=zeros_like(params))


def step_correction(ctx: ClientContext, state: ClientState) -> TensorDict:
    """The drift term s = c - c_i of line 10; the local loop applies w <- w - eta_l * s per step."""
    return {k: ctx.server_control[k] - state.control[k] for k in state.control}


def client_finish(
    state: ClientState, ctx: ClientContext, delta: Mapping[str, torch.Tensor], steps: int, lr: float
) -> tuple[ClientState, TensorDict]:
    if steps < 1 or lr <= 0:
        raise ValueError(f"SCAFFOLD needs steps >= 1 and lr > 0, got steps={steps}, lr={lr}")
    # (x - y_i) = -delta
    new_c = {k: state.control[k] - ctx.server_control[k] - delta[k] / (steps * lr) for k in delta}
    control_delta = {k: new_c[k] - state.control[k] for k in delta}
    return replace(state, control=new_c), control_delta


def server_update_fn(eta: float, num_parties: int):
    if num_parties < 1:
        raise ValueError("SCAFFOLD needs the total number of parties N >= 1")

    def server_update(state: ServerState, aggregate: Aggregate) -> ServerState:
        agg = check_aggregate(aggregate)
        if agg.control_delta_sum is None:
            raise ValueError("SCAFFOLD's server step needs the summed control deltas")
        mean = agg.mean_delta()
        params = {k: state.params[k] + eta * mean[k] for k in state.params}
        control = {k: state.control[k] + agg.control_delta_sum[k] / num_parties for k in state.params}
        return replace(state, round=state.round + 1, params=params, control=control)

    return server_update


def scaffold(eta: float, num_parties: int) -> Algorithm:
    return Algorithm(
        "scaffold",
        init_server,
        server_update_fn(eta, num_parties),
        init_client,
        client_finish,
        step_correction=step_correction,
        uses_control=True,
    )
