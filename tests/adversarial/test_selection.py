"""Inconsistent selection: the server picks who is in a round. A deployed party whose app knows the
seeded selection (the FL client app does) refuses a round whose selection adds anyone to it: the
server may leave out parties it cannot reach, never choose others (v1: any selection was taken)."""

from __future__ import annotations

import numpy as np

from _deploy_helpers import provision
from securefed.deploy.kit import load_party_kit
from securefed.deploy.party import _Party
from securefed.deploy.wire import encode_round_start
from securefed.protocols.base import PartyInput, RoundContext
from securefed.transport.frames import Kind

PARTIES = ("p0", "p1", "p2", "p3", "p4")


class _Link:
    def __init__(self) -> None:
        self.sent: list[Kind] = []

    def send(self, kind, **kw) -> None:
        self.sent.append(kind)


class _App:
    """Trains nothing; its seeded selection for every round is p0 .. p3."""

    def __init__(self) -> None:
        self.trained = 0

    def expected_selection(self, round: int) -> tuple[str, ...]:
        return ("p0", "p1", "p2", "p3")

    def local_update(self, round, payload, ctx) -> PartyInput:
        self.trained += 1
        return PartyInput(np.zeros(ctx.vector_len, np.float32), None, 1.0)


def test_party_refuses_a_selection_outside_the_seeded_one(tmp_path) -> None:
    fed = provision(tmp_path / "fed", PARTIES, "secagg")
    app = _App()
    party = _Party(load_party_kit(fed.party_dirs["p0"]), app, None)
    fid = fed.config.federation_id
    link = _Link()
    party._round_start(link, 0, 0, encode_round_start(RoundContext(fid, 0, ("p0", "p1", "p4"), 8, False, 10), b""))
    assert link.sent == [Kind.DROPPED] and app.trained == 0  # p4 is not in the seeded selection
    party._round_start(link, 1, 0, encode_round_start(RoundContext(fid, 1, ("p0", "p2", "p3"), 8, False, 10), b""))
    assert link.sent == [Kind.DROPPED, Kind.READY] and app.trained == 1  # p1 unreachable: a subset is fine
    assert party.session is not None and party.key == (1, 0)
