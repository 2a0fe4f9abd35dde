"""The two application interfaces the deployment loops drive; the loops themselves only move bytes
and run the protocol.

Rounds are numbered 0..rounds-1. `ServerApp.global_payload(rounds)` (one past the last round) is
the final payload every party receives in `ClientApp.receive_final` when the federation ends.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from securefed.deploy.settings import FederationConfig
from securefed.protocols.base import PartyInput, RoundContext, VectorSum


class RoundDeclined(Exception):
    """Raised by ClientApp.local_update when the party chooses to sit a round out (e.g. its
    differential-privacy budget is spent): it is a dropout for that round, not a failure."""


class ServerApp(Protocol):
    def round_context(self, round: int, selected: tuple[str, ...]) -> RoundContext:
        """Public facts of the round; party_ids must equal the sorted selection."""

    def global_payload(self, round: int) -> bytes:
        """Broadcast to the selected parties before training (global adapter etc.)."""

    def apply(self, round: int, result: VectorSum) -> dict[str, Any]:
        """The server algorithm step, on the protocol's sum only; returns JSON-able metrics."""

    def state_bytes(self) -> bytes:
        """Everything needed to resume after the last applied round (checkpointed)."""

    def load_state(self, data: bytes) -> None: ...

    def select(self, round: int, available: tuple[str, ...]) -> tuple[str, ...]:
        """Of the round's invited, connected parties (`available`), those to start (e.g. those whose
        DP budget allows it); the others are dropouts of the round."""


class ClientApp(Protocol):
    def local_update(self, round: int, global_payload: bytes, ctx: RoundContext) -> PartyInput:
        """Local training from the global payload; the protocol carries the result."""

    def receive_final(self, payload: bytes) -> None: ...

    # Who is invited is not the app's choice: every party derives it from the roster
    # (securefed.membership) and refuses any other set.


ServerAppFactory = Callable[[FederationConfig], ServerApp]
ClientAppFactory = Callable[[FederationConfig, str], ClientApp]  # (federation, party id)
