"""Server updates on hand-computable vectors, exact numbers from the papers' equations.

Shared setup: x = [1.0, -2.0]; party 1 (w=1) sends delta [0.2, 0.4], party 2 (w=3) sends
[0.6, -0.4]. Sum of weighted deltas [2.0, -0.8], total weight 4, mean Delta = [0.5, -0.2].
"""

import dataclasses

import pytest
import torch

from securefed.aggregate import Aggregate
from securefed.algorithms import AlgorithmConfig, create

X = {"a": torch.tensor([1.0, -2.0], dtype=torch.float64)}


def agg(control=None):
    return Aggregate({"a": torch.tensor([2.0, -0.8], dtype=torch.float64)}, control, 4.0, 2)


def run(name, rounds=1, n=4, **kw):
    alg = create(AlgorithmConfig(name=name, **kw), n)
    state = alg.init_server(X)
    for _ in range(rounds):
        state = alg.server_update(state, agg({"a": torch.tensor([-0.8, 2.0], dtype=torch.float64)}))
    return state


def close(t, values):
    assert torch.allclose(t, torch.tensor(values, dtype=torch.float64), atol=1e-9, rtol=0), t


def test_fedavg_moves_by_weighted_mean():
    close(run("fedavg").params["a"], [1.5, -2.2])  # x + 1.0 * [0.5, -0.2]


def test_fedavg_server_lr():
    close(run("fedavg", server_lr=0.5).params["a"], [1.25, -2.1])


def test_fedavgm_two_rounds():
    # Hsu et al. 2019: v1 = Delta = [0.5,-0.2]; x1 = [1.5,-2.2]; v2 = 0.5*v1 + Delta = [0.75,-0.3]; x2 = x1 + v2
    s = run("fedavgm", rounds=2, server_lr=1.0, server_momentum=0.5)
    close(s.opt["v"]["a"], [0.75, -0.3])
    close(s.params["a"], [2.25, -2.5])
    assert s.round == 2


def test_fedadagrad():
    # m = 0.1*Delta = [0.05,-0.02]; v = tau^2 + Delta^2 = [0.250001, 0.040001]
    # x = x + 0.1 * m / (sqrt(v) + 1e-3) = 1 + 0.005/0.501001, -2 - 0.002/0.201001 (sqrt(0.040001)=0.2000025)
    s = run("fedadagrad", server_lr=0.1, beta1=0.9, tau=1e-3)
    close(s.opt["m"]["a"], [0.05, -0.02])
    close(s.opt["v"]["a"], [0.250001, 0.040001])
    close(s.params["a"], [1.00998001999998, -2.009950124999219])


def test_fedyogi():
    # v = tau^2 - (1-0.99) * Delta^2 * sign(tau^2 - Delta^2) = 1e-6 + 0.01*[0.25, 0.04]
    s = run("fedyogi", server_lr=0.1, beta1=0.9, beta2=0.99, tau=1e-3)
    close(s.opt["v"]["a"], [0.002501, 0.000401])
    close(s.params["a"], [1.0980199980004, -2.095124921972504])


def test_fedadam():
    # v = 0.99 * tau^2 + 0.01 * Delta^2 = [0.00250099, 0.00040099]
    s = run("fedadam", server_lr=0.1, beta1=0.9, beta2=0.99, tau=1e-3)
    close(s.opt["v"]["a"], [0.00250099, 0.00040099])
    close(s.params["a"], [1.0980201901209485, -2.0951260516755887])


def test_scaffold_server_control_update():
    # Karimireddy et al. 2020, Alg. 1 line 17: c <- c + (1/N) * sum Delta c_i, N = 4 parties in all
    s = run("scaffold", n=4)
    close(s.params["a"], [1.5, -2.2])
    close(s.control["a"], [-0.2, 0.5])


def test_server_state_is_not_mutated():
    alg = create(AlgorithmConfig(name="fedadam"), 2)
    s0 = alg.init_server(X)
    before = {k: v.clone() for k, v in s0.opt["m"].items()}
    s1 = alg.server_update(s0, agg())
    assert torch.equal(s0.opt["m"]["a"], before["a"]) and s0.round == 0 and s1.round == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        s1.round = 5  # type: ignore[misc]


def test_server_update_rejects_anything_but_an_aggregate():
    alg = create(AlgorithmConfig(name="fedavg"), 2)
    with pytest.raises(TypeError, match="Aggregate"):
        alg.server_update(alg.init_server(X), [{"a": torch.zeros(2)}])  # a list of per-party updates


def test_aggregate_refuses_empty():
    with pytest.raises(ValueError):
        Aggregate({"a": torch.zeros(2)}, None, 0.0, 1)
    with pytest.raises(ValueError):
        Aggregate({"a": torch.zeros(2)}, None, 1.0, 0)


def test_scaffold_without_control_sum_raises():
    alg = create(AlgorithmConfig(name="scaffold"), 2)
    with pytest.raises(ValueError, match="control"):
        alg.server_update(alg.init_server(X), agg())


def test_local_never_steps():
    alg = create(AlgorithmConfig(name="local"), 2)
    assert not alg.aggregates
    with pytest.raises(RuntimeError):
        alg.server_update(alg.init_server(X), agg())


def test_unknown_algorithm_is_rejected_by_config():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="fedavg"):
        AlgorithmConfig(name="fedsgd")


ALL_AGGREGATING = ["fedavg", "fedprox", "scaffold", "fedavgm", "fedadagrad", "fedyogi", "fedadam"]


@pytest.mark.parametrize("name", ALL_AGGREGATING)
def test_cosine_server_schedule_is_the_same_algorithm_at_a_decayed_server_lr(name):
    """Round t under server_lr_schedule=cosine over T rounds = one constant-eta step at eta * s(t) from
    the same state (s(t) = (1 + cos(pi t / T)) / 2): moments, momentum and control variates as without it."""
    import math

    T, eta = 4, 0.3
    sched = create(AlgorithmConfig(name=name, server_lr=eta, server_lr_schedule="cosine"), 4, T)
    control = {"a": torch.tensor([-0.8, 2.0], dtype=torch.float64)}
    state = sched.init_server(X)
    for t in range(T):
        s = (1 + math.cos(math.pi * t / T)) / 2
        plain = create(AlgorithmConfig(name=name, server_lr=eta * s), 4)
        want = plain.server_update(state, agg(control))
        state = sched.server_update(state, agg(control))
        torch.testing.assert_close(state.params["a"], want.params["a"], atol=1e-12, rtol=0)
        for key, moment in want.opt.items():
            torch.testing.assert_close(state.opt[key]["a"], moment["a"], atol=0, rtol=0)
        assert state.round == want.round == t + 1


def test_cosine_server_schedule_needs_the_rounds_and_constant_is_untouched():
    with pytest.raises(ValueError, match="needs the number of rounds"):
        create(AlgorithmConfig(name="fedadam", server_lr_schedule="cosine"), 4)
    constant = create(AlgorithmConfig(name="fedadam", server_lr=0.1), 4, 10)
    s = constant.server_update(constant.init_server(X), agg())
    close(s.params["a"], run("fedadam", server_lr=0.1).params["a"].tolist())  # rounds change nothing here
    with pytest.raises(ValueError, match="server_lr_schedule"):
        AlgorithmConfig(name="fedadam", server_lr_schedule="linear")
