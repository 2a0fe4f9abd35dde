"""A threshold `he` party's memory of rounds (on disk in deployment, written atomically BEFORE the
reply it guards leaves the party; in memory in simulation).

Per round (the latest begun; older rounds are refused, as are rounds past the configured count):
- every encryption round tau it encrypted under: never two uploads under one a_tau (two messages
  under one (a_tau, s_i) differ by Delta*(m - m') + small noise);
- the one contributor set C it signed: two decrypted sums of the round over different sets could
  differ by one party's update; a quorum of such signatures makes C unique per round;
- how many decryption answers it gave (only for the C it signed): the flooding is sized for
  scheme.answers_per_round answers.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from securefed.atomic import atomic_write_text
from securefed.errors import ConfigError
from securefed.protocols.base import ProtocolError

_FORMAT = "securefed-he-threshold-ledger/1"
MAX_ENCRYPTIONS = 64  # attempts of one round a party encrypts for


class ThresholdLedger:
    def __init__(self, path: str | Path | None = None, max_rounds: int | None = None) -> None:
        if max_rounds is not None and max_rounds < 1:
            raise ValueError("max_rounds must be >= 1")
        self.path = None if path is None else Path(path)
        self.max_rounds = max_rounds
        self._lock = threading.Lock()
        self.latest, self.encrypted, self.signed, self.answers = -1, [], None, 0
        if self.path is not None and self.path.exists():
            try:
                d = json.loads(self.path.read_text())
                if d.get("format") != _FORMAT:
                    raise ValueError("wrong format")
                self.latest, self.encrypted = int(d["latest_round"]), [str(x) for x in d["encrypted"]]
                self.signed, self.answers = d["signed"], int(d["answers"])
                if self.signed is not None and not isinstance(self.signed, str):
                    raise ValueError("signed")
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
                raise ConfigError(f"{self.path}: unreadable round ledger ({e})") from None

    def begin(self, round_: int) -> None:
        with self._lock:
            if self.max_rounds is not None and round_ >= self.max_rounds:
                raise ProtocolError("round beyond the configured rounds")
            if round_ < self.latest:
                raise ProtocolError("round already used")
            if round_ > self.latest:
                self.latest, self.encrypted, self.signed, self.answers = round_, [], None, 0
                self._save()

    def claim_encryption(self, round_: int, seed: bytes) -> None:
        with self._lock:
            tag = seed.hex()
            if round_ != self.latest or tag in self.encrypted or len(self.encrypted) >= MAX_ENCRYPTIONS:
                raise ProtocolError("encryption round already used")
            self.encrypted.append(tag)
            self._save()

    def claim_signature(self, round_: int, c_hash: bytes) -> None:
        with self._lock:
            if round_ != self.latest or self.signed not in (None, c_hash.hex()):
                raise ProtocolError("another contributor set was signed this round")
            if self.signed is None:
                self.signed = c_hash.hex()
                self._save()

    def claim_answer(self, round_: int, c_hash: bytes, limit: int) -> None:
        with self._lock:
            if round_ != self.latest or self.signed != c_hash.hex() or self.answers >= limit:
                raise ProtocolError("decryption not allowed")
            self.answers += 1
            self._save()

    def _save(self) -> None:
        if self.path is not None:
            atomic_write_text(self.path, json.dumps(
                {"format": _FORMAT, "latest_round": self.latest, "encrypted": self.encrypted,
                 "signed": self.signed, "answers": self.answers}) + "\n")
