"""Algorithms by name. `create(config, num_parties, rounds)` builds one from its config section."""

from __future__ import annotations

from typing import Callable

from securefed.algorithms.adaptive import fedadagrad, fedadam, fedyogi
from securefed.algorithms.averaging import fedavg, fedavgm, fedprox
from securefed.algorithms.base import Algorithm
from securefed.algorithms.config import AlgorithmConfig
from securefed.algorithms.local import local
from securefed.algorithms.schedule import cosine_factor, with_server_schedule
from securefed.algorithms.scaffold import scaffold

Factory = Callable[[AlgorithmConfig, int], Algorithm]
_FACTORIES: dict[str, Factory] = {}


def register(name: str, factory: Factory) -> None:
    if name in _FACTORIES:
        raise ValueError(f"algorithm {name!r} is already registered")
    _FACTORIES[name] = factory


def names() -> tuple[str, ...]:
    return tuple(sorted(_FACTORIES))


def create(config: AlgorithmConfig, num_parties: int, rounds: int | None = None) -> Algorithm:
    """rounds: the federation's, needed by `server_lr_schedule = "cosine"` (the server lr decays over them)."""
    if config.name not in _FACTORIES:
        raise KeyError(f"unknown algorithm {config.name!r}; known: {', '.join(names())}")
    algorithm = _FACTORIES[config.name](config, num_parties)
    if config.server_lr_schedule == "constant":
        return algorithm
    if rounds is None or rounds < 1:
        raise ValueError("algorithm.server_lr_schedule 'cosine' needs the number of rounds")
    return with_server_schedule(algorithm, cosine_factor(rounds))


register("fedavg", lambda c, n: fedavg(c.resolved_server_lr()))
register("fedprox", lambda c, n: fedprox(c.mu, c.resolved_server_lr()))
register("scaffold", lambda c, n: scaffold(c.resolved_server_lr(), n))
register("fedavgm", lambda c, n: fedavgm(c.resolved_server_lr(), c.server_momentum))
register("fedadagrad", lambda c, n: fedadagrad(c.resolved_server_lr(), c.beta1, c.tau))
register("fedyogi", lambda c, n: fedyogi(c.resolved_server_lr(), c.beta1, c.beta2, c.tau))
register("fedadam", lambda c, n: fedadam(c.resolved_server_lr(), c.beta1, c.beta2, c.tau))
register("local", lambda c, n: local())
