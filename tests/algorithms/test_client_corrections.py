"""Client-side corrections of FedProx and SCAFFOLD on hand-computable vectors."""

import torch

from securefed.algorithms import AlgorithmConfig, ClientContext, ClientState, create


def t(*v):
    return torch.tensor(v, dtype=torch.float64)


def test_fedprox_gradient_correction():
    # Li et al. 2020 eq. 2: grad of mu/2 ||w - x_t||^2 is mu (w - x_t); mu = 0.1
    alg = create(AlgorithmConfig(name="fedprox", mu=0.1), 3)
    ctx = ClientContext(global_params={"a": t(1.0, -2.0)})
    out = alg.grad_correction({"a": t(1.5, -1.0)}, {"a": t(1.0, 1.0)}, ctx, ClientState())
    assert torch.allclose(out["a"], t(1.05, 1.1))


def test_scaffold_drift_correction():
    # Karimireddy et al. 2020 Alg. 1 line 10: y <- y - eta (g - c_i + c); the drift part is c - c_i
    alg = create(AlgorithmConfig(name="scaffold"), 3)
    ctx = ClientContext(global_params={"a": t(0, 0)}, server_control={"a": t(0.1, 0.0)})
    state = ClientState(control={"a": t(0.3, -0.1)})
    out = alg.step_correction(ctx, state)
    assert torch.allclose(out["a"], t(-0.2, 0.1))
    assert alg.grad_correction is None


def test_scaffold_step_equals_corrected_sgd_step():
    # With plain SGD, optimizer step then drift equals one step on the corrected gradient g - c_i + c.
    alg = create(AlgorithmConfig(name="scaffold"), 3)
    ctx = ClientContext(global_params={"a": t(0, 0)}, server_control={"a": t(0.1, 0.0)})
    state = ClientState(control={"a": t(0.3, -0.1)})
    y, g, lr = t(1.0, 2.0), t(1.0, 1.0), 0.5
    two_phase = (y - lr * g) - lr * alg.step_correction(ctx, state)["a"]
    assert torch.allclose(two_phase, y - lr * t(0.8, 1.1))


def test_scaffold_option_two_control_update():
    # line 12 option II: c_i+ = c_i - c + (x - y_i)/(K eta_l); delta = y_i - x = [0.2,-0.4], K=4, eta_l=0.05
    # (x - y_i)/(K eta_l) = [-1.0, 2.0]; c_i+ = [0.3-0.1-1.0, -0.1-0.0+2.0] = [-0.8, 1.9]; Delta c_i = [-1.1, 2.0]
    alg = create(AlgorithmConfig(name="scaffold"), 3)
    ctx = ClientContext(global_params={"a": t(0, 0)}, server_control={"a": t(0.1, 0.0)})
    state = ClientState(control={"a": t(0.3, -0.1)})
    new_state, dc = alg.client_finish(state, ctx, {"a": t(0.2, -0.4)}, 4, 0.05)
    assert torch.allclose(new_state.control["a"], t(-0.8, 1.9))
    assert torch.allclose(dc["a"], t(-1.1, 2.0))
    assert torch.allclose(state.control["a"], t(0.3, -0.1))  # input untouched


def test_plain_algorithms_have_no_correction():
    for name in ("fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad", "local"):
        alg = create(AlgorithmConfig(name=name), 3)
        assert alg.grad_correction is None and alg.step_correction is None and not alg.uses_control


def test_local_keeps_own_adapter():
    alg = create(AlgorithmConfig(name="local"), 3)
    st = alg.init_client({"a": t(1.0, 1.0)})
    st2, dc = alg.client_finish(st, ClientContext(global_params=st.own_params), {"a": t(0.5, -0.5)}, 1, 0.1)
    assert dc is None and torch.allclose(st2.own_params["a"], t(1.5, 0.5))
