"""A party's memory of rounds across sessions: what makes replays across attempts and rounds useless.

A malicious server can start any number of sessions (attempts) for one round. Each has fresh keys and
secrets, but the party's update is the same in all of them, so the party must never answer the
unmask stage of a round twice: two unmaskings of one input under different views are what the
replay attack combines. It also refuses round numbers that go backwards or pass the configured
rounds, which bounds how many graphs (one per round, see graph.round_order) the server can try.

State, per party: the highest round begun and the last round whose unmask was answered. On disk
(deployment) it is written atomically *before* the unmask reply leaves, so a crash cannot lose it;
in memory (simulation) one ledger lives as long as the protocol object.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from securefed.atomic import atomic_write_text
from securefed.errors import ConfigError
from securefed.protocols.base import ProtocolError

_FORMAT = "securefed-secagg-ledger/1"


class RoundLedger:
    def __init__(self, path: str | Path | None = None, max_rounds: int | None = None) -> None:
        """path: a JSON file (created on first write); None keeps the ledger in memory.
        max_rounds: rounds are 0 .. max_rounds - 1; None = unbounded (simulation)."""
        if max_rounds is not None and max_rounds < 1:
            raise ValueError("max_rounds must be >= 1")
        self.path = None if path is None else Path(path)
        self.max_rounds = max_rounds
        self._lock = threading.Lock()
        self.latest, self.unmasked = -1, -1
        if self.path is not None and self.path.exists():
            try:
                d = json.loads(self.path.read_text())
                if d.get("format") != _FORMAT:
                    raise ValueError("wrong format")
                self.latest, self.unmasked = int(d["latest_round"]), int(d["unmasked_round"])
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
                raise ConfigError(f"{self.path}: unreadable round ledger ({e})") from None

    def begin(self, round_: int) -> None:
        """A session for `round_` starts: refuse it unless the round is new or the current one and
        its unmask was not answered yet."""
        with self._lock:
            if self.max_rounds is not None and round_ >= self.max_rounds:
                raise ProtocolError("round beyond the configured rounds")
            if round_ < self.latest or round_ <= self.unmasked:
                raise ProtocolError("round already used")
            if round_ > self.latest:
                self.latest = round_
                self._save()

    def claim_unmask(self, round_: int) -> None:
        """Called before the unmask reply is produced; raises if this round was unmasked already."""
        with self._lock:
            if round_ <= self.unmasked or round_ < self.latest:
                raise ProtocolError("round already unmasked")
            self.unmasked = self.latest = round_
            self._save()

    def _save(self) -> None:
        if self.path is not None:
            atomic_write_text(self.path, json.dumps(
                {"format": _FORMAT, "latest_round": self.latest, "unmasked_round": self.unmasked}) + "\n")
