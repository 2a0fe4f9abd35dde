"""Optional TensorBoard event files, written round by round (`output.tensorboard = true`).

torch.utils.tensorboard needs the `tensorboard` package, an optional extra
(`pip install 'securefed[tensorboard]'`); asking for event files without it is a config error,
found when the config loads, not after the model has."""

from __future__ import annotations

import contextlib
import importlib.util
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from securefed.errors import ConfigError

MISSING = "output.tensorboard = true needs the tensorboard package: pip install 'securefed[tensorboard]'"


def missing() -> str | None:
    """Why event files cannot be written here, or None."""
    return MISSING if importlib.util.find_spec("tensorboard") is None else None


def check_available() -> None:
    if missing():
        raise ConfigError(MISSING)


def scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The numeric metrics of a round (nested dicts such as per-party epsilon are left out)."""
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "round"}


@contextlib.contextmanager
def round_writer(enabled: bool, log_dir: Path, timed: bool = True) -> Iterator[Callable[[Mapping[str, Any]], None]]:
    """Yields write(metrics): one scalar per metric at step = the round number, flushed each round
    so TensorBoard shows a run while it goes. A no-op when not enabled. timed=False (a secret
    Poisson draw): each event's wall time is its round number, not the clock (a round's duration
    tells how many parties it trained)."""
    if not enabled:
        yield lambda metrics: None
        return
    check_available()
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(log_dir))
    try:
        def write(metrics: Mapping[str, Any]) -> None:
            for key, value in scalars(metrics).items():
                writer.add_scalar(key, value, global_step=int(metrics["round"]),
                                  walltime=None if timed else float(metrics["round"]))
            writer.flush()

        yield write
    finally:
        writer.close()
