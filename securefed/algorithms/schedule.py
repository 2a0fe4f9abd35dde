"""A server learning-rate schedule over the rounds, for any algorithm.

Every server step here is x_{t+1} = x_t + eta * u_t (u_t: the mean delta for FedAvg/FedProx/SCAFFOLD,
the momentum buffer for FedAvgM, m_t / (sqrt(v_t) + tau) for FedAdagrad/FedYogi/FedAdam), and u_t does
not depend on eta. So scaling the round's parameter step by s(t) is the same as running the round at
server lr eta * s(t); moments, momentum and control variates are left as the algorithm made them.

Why it matters: the client lr's cosine shrinks the parties' deltas as the rounds end, and FedAvg's step
with them. An adaptive server's step eta m_t / (sqrt(v_t) + tau) carries many rounds of earlier, larger
deltas in m_t and v_t, so at a constant eta it keeps moving after the clients have stopped (measured in
docs/results.md: FedYogi on SmolLM2 still stepped 5.5e-4 a coordinate at the last round, when the
clients' lr was 1/365 of the first round's, and its train loss rose).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from securefed.aggregate import Aggregate
from securefed.algorithms.base import Algorithm, ServerState
from securefed.training.schedule import round_lr


def cosine_factor(rounds: int) -> Callable[[int], float]:
    """s(t) for server update t (0-based): the client lr's cosine over `rounds`, 1 at t = 0."""
    return lambda t: round_lr(t, rounds, 1.0, 0.0, "cosine")


def with_server_schedule(algorithm: Algorithm, factor: Callable[[int], float]) -> Algorithm:
    """`algorithm` with update t's parameter step scaled by factor(t); t counts the server updates
    applied so far (state.round), so a round whose sum was rejected does not advance it."""
    inner = algorithm.server_update

    def server_update(state: ServerState, aggregate: Aggregate) -> ServerState:
        new = inner(state, aggregate)
        s = factor(state.round)
        return replace(new, params={k: state.params[k] + s * (new.params[k] - state.params[k]) for k in new.params})

    return replace(algorithm, server_update=server_update)
