"""FedAdagrad, FedYogi, FedAdam: Reddi et al. 2021, "Adaptive Federated Optimization", Algorithm 2.

With the pseudo-gradient Delta_t = weighted mean of (y_i - x_t):
    m_t = beta1 * m_{t-1} + (1 - beta1) * Delta_t
    Adagrad: v_t = v_{t-1} + Delta_t^2
    Yogi:    v_t = v_{t-1} - (1 - beta2) * Delta_t^2 * sign(v_{t-1} - Delta_t^2)
    Adam:    v_t = beta2 * v_{t-1} + (1 - beta2) * Delta_t^2
    x_{t+1} = x_t + eta * m_t / (sqrt(v_t) + tau)
No bias correction, as in the paper. v_{-1} = tau^2 (the paper asks v_{-1} >= tau^2).
FedAdagrad in the paper uses m_t with beta1 as well (Algorithm 2 shares the momentum line).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Mapping

import torch

from securefed.aggregate import Aggregate
from securefed.algorithms.base import (
    Algorithm,
    ServerState,
    check_aggregate,
    clone,
    finish_without_control,
    no_client_state,
    zeros_like,
)

SecondMoment = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]  # (v_prev, delta^2, beta2) -> v


def _adagrad_v(v: torch.Tensor, d2: torch.Tensor, beta2: float) -> torch.Tensor:
    return v + d2


def _yogi_v(v: torch.Tensor, d2: torch.Tensor, beta2: float) -> torch.Tensor:
    return v - (1 - beta2) * d2 * torch.sign(v - d2)


def _adam_v(v: torch.Tensor, d2: torch.Tensor, beta2: float) -> torch.Tensor:
    return beta2 * v + (1 - beta2) * d2


def _init(tau: float):
    def init_server(params: Mapping[str, torch.Tensor]) -> ServerState:
        v0 = {k: torch.full_like(p, tau * tau) for k, p in params.items()}
        return ServerState(round=0, params=clone(params), opt={"m": zeros_like(params), "v": v0})

    return init_server


def _update(second_moment: SecondMoment, eta: float, beta1: float, beta2: float, tau: float):
    def server_update(state: ServerState, aggregate: Aggregate) -> ServerState:
        delta = check_aggregate(aggregate).mean_delta()
        m = {k: beta1 * state.opt["m"][k] + (1 - beta1) * delta[k] for k in state.params}
        v = {k: second_moment(state.opt["v"][k], delta[k] * delta[k], beta2) for k in state.params}
        params = {k: state.params[k] + eta * m[k] / (torch.sqrt(v[k]) + tau) for k in state.params}
        return replace(state, round=state.round + 1, params=params, opt={"m": m, "v": v})

    return server_update


def _make(name: str, second_moment: SecondMoment, eta: float, beta1: float, beta2: float, tau: float) -> Algorithm:
    return Algorithm(
        name, _init(tau), _update(second_moment, eta, beta1, beta2, tau), no_client_state, finish_without_control
    )


def fedadagrad(eta: float, beta1: float, tau: float) -> Algorithm:
    return _make("fedadagrad", _adagrad_v, eta, beta1, 0.0, tau)


def fedyogi(eta: float, beta1: float, beta2: float, tau: float) -> Algorithm:
    return _make("fedyogi", _yogi_v, eta, beta1, beta2, tau)


def fedadam(eta: float, beta1: float, beta2: float, tau: float) -> Algorithm:
    return _make("fedadam", _adam_v, eta, beta1, beta2, tau)
