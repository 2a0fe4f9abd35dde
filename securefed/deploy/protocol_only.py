"""Protocol-only apps: seeded random vectors instead of training; the server keeps the running sum.

For transport tests, the load test and the benchmark. Settings come from federation.json's `app`
section: vector_len (16), has_control (false), max_weight (1000), seed (0), train_delay_s (0),
record_sums (false: when true each round's delta sum goes into its metrics line, for the churn
benchmark's per-round check; these apps carry no private data).
A party's input depends only on (seed, party id, round), so a retried round or a restarted process
contributes exactly what the in-process driver would.
"""

from __future__ import annotations

import hashlib
import os
import struct
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from securefed.deploy.settings import FederationConfig
from securefed.protocols.base import PartyInput, RoundContext, VectorSum

_STATE = struct.Struct("<4sIIQd")  # magic, vector_len, has_control, rounds applied, total weight


def _setting(fed: FederationConfig, key: str, default: Any) -> Any:
    return fed.app.get(key, default)


def protocol_only_input(seed: int, party_id: str, round: int, ctx: RoundContext) -> PartyInput:
    pid = int.from_bytes(hashlib.sha256(party_id.encode()).digest()[:8], "little")
    rng = np.random.default_rng([seed, round, pid])
    delta = rng.standard_normal(ctx.vector_len).astype(np.float32)
    control = rng.standard_normal(ctx.vector_len).astype(np.float32) if ctx.has_control else None
    weight = float(rng.integers(1, ctx.max_weight + 1))
    return PartyInput(delta, control, weight)


class ProtocolOnlyServerApp:
    def __init__(self, fed: FederationConfig) -> None:
        self.fed = fed
        self.vector_len = int(_setting(fed, "vector_len", 16))
        self.has_control = bool(_setting(fed, "has_control", False))
        self.max_weight = int(_setting(fed, "max_weight", 1000))
        self.delta_sum = np.zeros(self.vector_len)
        self.control_sum = np.zeros(self.vector_len)
        self.total_weight = 0.0
        self.rounds_applied = 0
        self.record_sums = bool(_setting(fed, "record_sums", False))

    def round_context(self, round: int, selected: tuple[str, ...]) -> RoundContext:
        return RoundContext(self.fed.federation_id, round, tuple(sorted(selected)), self.vector_len,
                            self.has_control, self.max_weight)

    def global_payload(self, round: int) -> bytes:
        return self.state_bytes()

    def apply(self, round: int, result: VectorSum) -> dict[str, Any]:
        self.delta_sum += result.delta_sum
        if result.control_sum is not None:
            self.control_sum += result.control_sum
        self.total_weight += result.total_weight
        self.rounds_applied += 1
        out = {"total_weight": result.total_weight, "contributors": len(result.contributors)}
        if self.record_sums:
            out["delta_sum"] = [float(v) for v in result.delta_sum]
        return out

    def state_bytes(self) -> bytes:
        head = _STATE.pack(b"POSA", self.vector_len, int(self.has_control), self.rounds_applied, self.total_weight)
        return head + self.delta_sum.astype("<f8").tobytes() + self.control_sum.astype("<f8").tobytes()

    def load_state(self, data: bytes) -> None:
        self.__dict__.update(decode_state(data))

    def select(self, round: int, available: tuple[str, ...]) -> tuple[str, ...]:
        return available


def decode_state(data: bytes) -> dict[str, Any]:
    if len(data) < _STATE.size:
        raise ValueError("protocol-only state too short")
    magic, m, ctrl, applied, weight = _STATE.unpack_from(data)
    if magic != b"POSA" or len(data) != _STATE.size + 16 * m:
        raise ValueError("protocol-only state malformed")
    v = np.frombuffer(data, dtype="<f8", offset=_STATE.size).astype(np.float64)
    return {"vector_len": m, "has_control": bool(ctrl), "rounds_applied": applied, "total_weight": weight,
            "delta_sum": v[:m].copy(), "control_sum": v[m:].copy()}


class ProtocolOnlyClientApp:
    def __init__(self, fed: FederationConfig, party_id: str, final_path: str | Path | None = None) -> None:
        self.party_id = party_id
        self.seed = int(_setting(fed, "seed", 0))
        self.train_delay_s = float(_setting(fed, "train_delay_s", 0.0))
        self.final_path = Path(final_path) if final_path else None
        self.final: bytes | None = None

    def local_update(self, round: int, global_payload: bytes, ctx: RoundContext) -> PartyInput:
        if self.train_delay_s:
            time.sleep(self.train_delay_s)  # stands in for training time
        return protocol_only_input(self.seed, self.party_id, round, ctx)

    def receive_final(self, payload: bytes) -> None:
        self.final = payload
        if self.final_path is not None:
            self.final_path.write_bytes(payload)


class _CrashingSession:
    """Exits the process abruptly (like kill -9) at the `call`-th stage it is asked to handle."""

    def __init__(self, inner: Any, call: int) -> None:
        self._inner, self._left = inner, call

    def handle(self, message: Any) -> Any:
        self._left -= 1
        if self._left == 0:
            os._exit(3)
        return self._inner.handle(message)


def crash_hook(round: int, call: int) -> Callable[[RoundContext, str, Any], Any]:
    """A run_client session hook for fault-injection tests: the process dies at the `call`-th stage
    of the first round >= `round` it takes part in."""

    def hook(ctx: RoundContext, party_id: str, session: Any) -> Any:
        return _CrashingSession(session, call) if ctx.round >= round else session

    return hook
