"""FedAvg (McMahan et al. 2017), FedProx (Li et al. 2020) and FedAvgM (Hsu et al. 2019).

All three move the global adapter by the weighted mean update
    Delta_t = sum_i w_i (y_i - x_t) / sum_i w_i                       (the Aggregate's mean_delta)
FedAvg/FedProx:  x_{t+1} = x_t + eta * Delta_t
FedAvgM:         v_{t+1} = beta * v_t + Delta_t ;  x_{t+1} = x_t + eta * v_{t+1}
FedProx adds mu/2 * ||w - x_t||^2 to each local loss, i.e. the gradient correction mu * (w - x_t).
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
    finish_without_control,
    no_client_state,
    zeros_like,
)


def init_server(params: Mapping[str, torch.Tensor]) -> ServerState:
    return ServerState(round=0, params=clone(params))


def fedavg_update(eta: float):
    def server_update(state: ServerState, aggregate: Aggregate) -> ServerState:
        mean = check_aggregate(aggregate).mean_delta()
        params = {k: state.params[k] + eta * mean[k] for k in state.params}
        return replace(state, round=state.round + 1, params=params)

    return server_update


def fedprox_correction(mu: float):
    def grad_correction(
        params: Mapping[str, torch.Tensor], grads: Mapping[str, torch.Tensor], ctx: ClientContext, state: ClientState
    ) -> TensorDict:
        # d/dw [mu/2 ||w - x_t||^2] = mu (w - x_t)   (Li et al. 2020, eq. 2)
        return {k: g + mu * (params[k] - ctx.global_params[k]) for k, g in grads.items()}

    return grad_correction


def fedavgm_init(params: Mapping[str, torch.Tensor]) -> ServerState:
    return ServerState(round=0, params=clone(params), opt={"v": zeros_like(params)})


def fedavgm_update(eta: float, beta: float):
    def server_update(state: ServerState, aggregate: Aggregate) -> ServerState:
        mean = check_aggregate(aggregate).mean_delta()
        v = {k: beta * state.opt["v"][k] + mean[k] for k in state.params}
        params = {k: state.params[k] + eta * v[k] for k in state.params}
        return replace(state, round=state.round + 1, params=params, opt={"v": v})

    return server_update


def fedavg(eta: float = 1.0) -> Algorithm:
    return Algorithm("fedavg", init_server, fedavg_update(eta), no_client_state, finish_without_control)


def fedprox(mu: float, eta: float = 1.0) -> Algorithm:
    return Algorithm(
        "fedprox", init_server, fedavg_update(eta), no_client_state, finish_without_control, fedprox_correction(mu)
    )


def fedavgm(eta: float, beta: float) -> Algorithm:
    return Algorithm("fedavgm", fedavgm_init, fedavgm_update(eta, beta), no_client_state, finish_without_control)
