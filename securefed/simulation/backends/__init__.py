"""Where a simulation's parties train: in this process (the default) or on a pool of Ray actors.

    with open_backend(world) as backend:     # None for "inprocess"
        remote = backend.train(...)          # Ray: a RemoteRound (pending states, losses, aggregate(ctx))
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from securefed.errors import UserError
from securefed.simulation.backends.config import RAY_EXTRA


@contextlib.contextmanager
def open_backend(world: Any) -> Iterator[Any]:
    if world.cfg.simulation.backend == "inprocess":
        yield None
        return
    try:
        from securefed.simulation.backends.ray_pool import RayBackend
    except ImportError:  # the config check saw it installed; another process may have removed it
        raise UserError(RAY_EXTRA) from None
    backend = RayBackend(world)
    try:
        yield backend
    finally:
        backend.shutdown()
