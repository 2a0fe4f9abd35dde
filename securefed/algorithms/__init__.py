"""FL algorithms as pure functions over frozen state; see `base.Algorithm`."""

from securefed.algorithms.base import Algorithm, ClientContext, ClientState, ServerState
from securefed.algorithms.config import AlgorithmConfig
from securefed.algorithms.registry import create, names, register

__all__ = ["Algorithm", "AlgorithmConfig", "ClientContext", "ClientState", "ServerState", "create", "names", "register"]
