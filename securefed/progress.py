"""Progress of long runs, for a person at a terminal and for one reading a log later.

On a terminal: rich progress bars (as before). Anywhere else (CI, nohup, a cluster job, a pipe) a
bar would print nothing until the run ends, so each step becomes one plain, flushed line on stdout:
a line per party trained and per phase, and one line per round with loss, accuracy, bytes and
elapsed time. Every line also goes to a log file in the run directory (OUT/run.log), always, with a
UTC timestamp, together with the warnings the library logs (e.g. skipped malformed rows) and Python
warnings raised during the run (e.g. a DP modulus that inflates the sensitivity, a library's notice).

`RunProgress` has the methods of `rich.progress.Progress` the round loop uses (add_task, reset,
update, advance), so the loop reports through one object whatever the output is.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

LOGGER = "securefed"  # the package's loggers all live under this name
# Shown in the per-round line when present: the evaluation figure people watch, first found wins.
EVAL_KEYS = ("accuracy", "preference_accuracy", "perplexity", "eval_loss")


def _elapsed(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"


def _bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # pragma: no cover - loop always returns


def round_line(metrics: Mapping[str, Any], rounds: int, elapsed: float | None) -> str:
    """'round 3/10: loss 0.6931 accuracy 0.5000 macro_f1 0.41 eps 1.2 bytes/party 131.1 kB round 3.1 s
    elapsed 0:00:09' (fields that the round did not measure are left out, accuracy shows '-'; no
    elapsed time when `elapsed` is None)."""
    parts = [f"round {metrics.get('round', '?')}/{rounds}:"]
    if "train_loss" in metrics:
        parts.append(f"loss {metrics['train_loss']:.4f}")
    key = next((k for k in EVAL_KEYS if k in metrics), None)
    parts.append(f"{key} {metrics[key]:.4f}" if key else "accuracy -")
    if "macro_f1" in metrics:
        parts.append(f"macro_f1 {metrics['macro_f1']:.4f}")
    if "dp_epsilon_max" in metrics:
        parts.append(f"epsilon {metrics['dp_epsilon_max']:.3g}")
    if "bytes_sent_per_party" in metrics:
        parts.append(f"bytes/party {_bytes(metrics['bytes_sent_per_party'])}")
    if "seconds" in metrics:
        parts.append(f"round {metrics['seconds']:.1f} s")
    if elapsed is not None:
        parts.append(f"elapsed {_elapsed(elapsed)}")
    return " ".join(parts)


class _LineHandler(logging.Handler):
    """Library warnings (>= WARNING), each as one 'level: message' line handed to `say`."""

    def __init__(self, say: Callable[[str], None]) -> None:
        super().__init__(logging.WARNING)
        self.say = say

    def emit(self, record: logging.LogRecord) -> None:
        self.say(f"{record.levelname.lower()}: {record.getMessage()}")


# Deprecation notices are for whoever maintains the calling code (often a library calling another),
# not for the person watching a run: they keep going to stderr as before.
_NOT_FOR_RUNS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)


@contextlib.contextmanager
def _python_warnings(say: Callable[[str], None]) -> Iterator[None]:
    """Python warnings inside the block (but deprecations) become lines for `say` (console and log)
    instead of going to stderr only; the filters (each warning once per place, by default) and the old
    hook come back after."""
    with warnings.catch_warnings():
        previous = warnings.showwarning

        def show(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
            if issubclass(category, _NOT_FOR_RUNS):
                previous(message, category, *args, **kwargs)
            else:
                say(f"warning: {category.__name__}: {message}")

        warnings.showwarning = show
        yield


class RunProgress:
    """Rounds and parties of a run: rich bars on a terminal, lines otherwise, always OUT/run.log."""

    def __init__(self, console: Console, log_path: Path | None, rounds: int, stream: TextIO | None = None,
                 tty: bool | None = None, timed: bool = True) -> None:
        # timed=False (a secret Poisson draw): no timestamps or elapsed times in lines or the log, as
        # a round's duration tells how many parties it trained
        self.console = console
        self.tty = console.is_terminal if tty is None else tty
        self.stream = stream
        self.rounds = rounds
        self.log_path = log_path
        self._file: TextIO | None = None
        self._bar: Progress | None = None
        self._handler = _LineHandler(self.note)  # into the run's lines: console and log file
        self._t0 = time.perf_counter()
        self._descriptions: dict[int, str] = {}
        self.timed = timed

    # --- context ---------------------------------------------------------------------------------
    def __enter__(self) -> "RunProgress":
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.log_path.open("a", encoding="utf-8", buffering=1)  # line-buffered
        logging.getLogger(LOGGER).addHandler(self._handler)
        self._warnings = _python_warnings(self.note)
        self._warnings.__enter__()
        if self.tty:
            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=self.console, transient=False)
            self._bar.__enter__()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        logging.getLogger(LOGGER).removeHandler(self._handler)
        self._warnings.__exit__(None, None, None)
        if self._bar is not None:
            self._bar.__exit__(*exc)
        if exc and exc[0] is not None and not issubclass(exc[0], (KeyboardInterrupt, GeneratorExit)):
            self.write_log(f"stopped: {exc[0].__name__}: {exc[1]}")
        if self._file is not None:
            self._file.close()

    # --- lines -----------------------------------------------------------------------------------
    def write_log(self, text: str) -> None:
        if self._file is not None:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ ", time.gmtime()) if self.timed else ""
            self._file.write(f"{stamp}{text}\n")

    def note(self, text: str) -> None:
        """A line for the person and the log (a phase, a warning, a finished round)."""
        self.write_log(text)
        if self._bar is not None:
            self._bar.console.print(text, highlight=False, markup=False)
        else:
            out = self.stream or sys.stdout
            out.write(text + "\n")
            out.flush()

    def elapsed(self) -> float:
        return time.perf_counter() - self._t0

    def round_done(self, metrics: Mapping[str, Any]) -> None:
        self.note(round_line(metrics, self.rounds, self.elapsed() if self.timed else None))

    # --- the rich.progress.Progress surface the round loop uses ----------------------------------
    def add_task(self, description: str, total: float | None = None, completed: float = 0, **kw: Any) -> int:
        if self._bar is not None:
            return self._bar.add_task(description, total=total, completed=completed, **kw)
        task = len(self._descriptions)
        self._descriptions[task] = description
        return task

    def reset(self, task: int, total: float | None = None, description: str | None = None, **kw: Any) -> None:
        if self._bar is not None:
            self._bar.reset(task, total=total, description=description, **kw)
        elif description is not None:
            self._descriptions[task] = description  # a bar's label; the next update is the news

    def update(self, task: int, description: str | None = None, **kw: Any) -> None:
        if self._bar is not None:
            self._bar.update(task, description=description, **kw)
        elif description is not None:
            self._describe(task, description)

    def advance(self, task: int, advance: float = 1) -> None:
        if self._bar is not None:
            self._bar.advance(task, advance)

    def _describe(self, task: int, description: str) -> None:
        # Without a bar a changed description is the news: print it once, with the time so far.
        if self._descriptions.get(task) != description:
            self._descriptions[task] = description
            self.note(f"{description} (elapsed {_elapsed(self.elapsed())})" if self.timed else description)


@contextlib.contextmanager
def collect_warnings(console: Console) -> Iterator[list[str]]:
    """Warnings the library logs before a run's log exists (e.g. while loading data): shown on the
    console now, and returned so the run can copy them into its log file."""
    notes: list[str] = []

    def say(text: str) -> None:
        notes.append(text)
        console.print(text, highlight=False, markup=False, soft_wrap=True)

    handler = _LineHandler(say)
    logging.getLogger(LOGGER).addHandler(handler)
    try:
        with _python_warnings(say):
            yield notes
    finally:
        logging.getLogger(LOGGER).removeHandler(handler)
