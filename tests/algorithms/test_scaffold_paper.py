"""SCAFFOLD end to end (party training, party weights, the plain protocol, the server step) against an
independent numpy reference of Karimireddy et al. 2020, Algorithm 1, on parties of unequal size with
partial participation over 3 rounds; and the per-algorithm weighting defaults."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from securefed.aggregate import FlatLayout
from securefed.algorithms import AlgorithmConfig, ClientContext, create
from securefed.protocols.base import RoundContext
from securefed.protocols.driver import run_round
from securefed.protocols.plain import Plain
from securefed.simulation.steps import party_input, to_aggregate
from securefed.training.sft import LocalResult

N, DIM, K, LR_LOCAL, LR_GLOBAL = 5, 4, 3, 0.1, 1.0
SIZES = [2, 50, 7, 300, 11]  # very unequal: sample weighting and the paper's mean differ a lot
ROUNDS = [(0, 1, 3), (1, 2, 4), (0, 3, 4)]  # the sampled set S of each round


def _problem():
    # Party i's loss f_i(y) = 1/(2 n_i) ||A_i y - b_i||^2 on n_i rows of its own (heterogeneous) data.
    rng = np.random.default_rng(0)
    return [(rng.normal(size=(n, DIM)), rng.normal(loc=i, size=n)) for i, n in enumerate(SIZES)]


def _grad(problem, i, y):
    a, b = problem[i]
    return a.T @ (a @ y - b) / len(b)


def reference(problem):
    """Algorithm 1 as printed: local steps y <- y - eta_l (g_i(y) - c_i + c); option II
    c_i+ = c_i - c + (x - y_i) / (K eta_l); x <- x + eta_g/|S| sum Delta y_i; c <- c + 1/N sum Delta c_i."""
    x, c = np.zeros(DIM), np.zeros(DIM)
    ci = [np.zeros(DIM) for _ in range(N)]
    for sampled in ROUNDS:
        dy, dc = [], []
        for i in sampled:
            y = x.copy()
            for _ in range(K):
                y = y - LR_LOCAL * (_grad(problem, i, y) - ci[i] + c)
            new_ci = ci[i] - c + (x - y) / (K * LR_LOCAL)
            dy.append(y - x)
            dc.append(new_ci - ci[i])
            ci[i] = new_ci
        x = x + LR_GLOBAL * np.mean(dy, axis=0)
        c = c + len(sampled) / N * np.mean(dc, axis=0)
    return x, c


def project(problem, weighting=None):
    """The same federation through the project's pieces: algorithm functions, party weights from the
    config, the plain protocol's sums and the Aggregate-only server step."""
    cfg = AlgorithmConfig(name="scaffold", server_lr=LR_GLOBAL, weighting=weighting)
    alg = create(cfg, N)
    t = lambda v: {"w": torch.tensor(v, dtype=torch.float32)}  # noqa: E731
    layout = FlatLayout.of(t(np.zeros(DIM)))
    server = alg.init_server(t(np.zeros(DIM)))
    clients = [alg.init_client(t(np.zeros(DIM))) for _ in range(N)]
    for r, sampled in enumerate(ROUNDS):
        inputs = {}
        for i in sampled:
            ctx = ClientContext(global_params=server.params, server_control=server.control)
            x = server.params["w"].double().numpy()
            y = x.copy()
            for _ in range(K):  # the local loop's SGD step, then the drift term w <- w - lr * s
                y = y - LR_LOCAL * _grad(problem, i, y)
                y = y - LR_LOCAL * alg.step_correction(ctx, clients[i])["w"].double().numpy()
            delta = t(y - x)
            state, control_delta = alg.client_finish(clients[i], ctx, delta, K, LR_LOCAL)
            clients[i] = state
            result = LocalResult(delta=delta, control_delta=control_delta, client_state=state, train_loss=0.0,
                                 steps=K)
            inputs[f"p{i}"] = party_input(result, layout, cfg.party_weight(SIZES[i]))
        ids = tuple(sorted(inputs))
        rctx = RoundContext("f", r, ids, DIM, True, 512)
        vsum, _ = run_round(Plain(), rctx, inputs, None, {p: None for p in ids})
        server = alg.server_update(server, to_aggregate(vsum, layout))
    return server.params["w"].double().numpy(), server.control["w"].double().numpy()


def test_scaffold_default_matches_the_paper_on_unequal_parties():
    problem = _problem()
    x_ref, c_ref = reference(problem)
    x, c = project(problem)
    assert np.allclose(x, x_ref, atol=2e-5) and np.allclose(c, c_ref, atol=2e-5)
    # Sample weighting is a different algorithm here, by far more than the float32 tolerance.
    x_samples, _ = project(problem, weighting="samples")
    assert np.abs(x_samples - x_ref).max() > 1e-2


@pytest.mark.parametrize(("name", "default"), [
    ("fedavg", "samples"), ("fedprox", "samples"), ("fedavgm", "samples"), ("fedadagrad", "samples"),
    ("fedyogi", "samples"), ("fedadam", "samples"), ("scaffold", "uniform"),
])
def test_weighting_defaults_and_override(name, default):
    cfg = AlgorithmConfig(name=name)
    assert cfg.resolved_weighting() == default
    assert cfg.party_weight(37) == (37.0 if default == "samples" else 1.0)
    other = "uniform" if default == "samples" else "samples"
    assert AlgorithmConfig(name=name, weighting=other).party_weight(37) == (1.0 if other == "uniform" else 37.0)
