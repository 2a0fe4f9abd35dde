"""Helpers for tests of the real FL apps: per-party data files, provisioning from a securefed config,
and the whole federation driven in process (protocols.driver.run_round) with the same apps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from securefed.config import load_config
from securefed.data.default import default_rows
from securefed.deploy.apps import RoundDeclined
from securefed.deploy.fl_apps import FLClientApp, FLServerApp, provision_fl_federation
from securefed.deploy.localrun import free_port
from securefed.deploy.provision import FederationPaths
from securefed.deploy.settings import load_federation
from securefed.protocols import registry
from securefed.protocols.driver import run_round

PARTIES = ("bank-c", "hospital-a", "hospital-b")


def write_party_data(tmp: Path, rows_total: int = 180) -> dict[str, Path]:
    """Each party's private file: an interleaved third of the embedded classification rows."""
    rows = default_rows()[:rows_total]
    out = {}
    for i, pid in enumerate(PARTIES):
        path = tmp / f"{pid}.jsonl"
        path.write_text("".join(json.dumps({"text": r["text"], "label": r["label"]}) + "\n" for r in rows[i::3]))
        out[pid] = path
    return out


def fl_overrides(small: Sequence[str], *extra: str) -> list[str]:
    """The small test config without its simulation-only keys (parties, data source), plus extra."""
    return [o for o in small if not o.startswith(("parties", "data.", "rounds"))] + list(extra)


def provision_fl(fed_dir: Path, overrides: Sequence[str]) -> FederationPaths:
    return provision_fl_federation(fed_dir, PARTIES, "127.0.0.1", load_config(None, list(overrides)),
                                   port=free_port())


class InProcessFederation:
    """The server app and every client app of a provisioned federation in this process; each round runs
    the federation's own protocol through protocols.driver.run_round. Client state goes to
    <state_root>/<party> (not the kits, so a real run on the same kits is unaffected)."""

    def __init__(self, fed_dir: Path, data: dict[str, Path], state_root: Path) -> None:
        self.fed = load_federation(fed_dir / "server" / "federation.json")
        self.protocol = registry.create(self.fed.protocol, self.fed.protocol_config)
        self.server_material, self.party_material = self.protocol.provision(PARTIES)
        self.server = FLServerApp(self.fed)
        self.data, self.state_root = data, state_root
        self.clients = {p: self.client(p) for p in PARTIES}

    def client(self, pid: str, state_dir: Path | None = None) -> FLClientApp:
        """A (new) client app for pid on its state folder: what a restarted party process builds."""
        return FLClientApp(self.fed, pid, str(self.data[pid]), state_dir or self.state_root / pid)

    def run_round(self, r: int) -> tuple[dict[str, Any], tuple[str, ...]]:
        """(server metrics, parties that declined the round)."""
        selected = self.server.select(r, PARTIES)
        ctx = self.server.round_context(r, selected)
        payload = self.server.global_payload(r)
        inputs, declined = {}, []
        for p in selected:
            try:
                inputs[p] = self.clients[p].local_update(r, payload, ctx)
            except RoundDeclined:
                declined.append(p)
        # A party without an input (it declined) is a dropout from the start, as over the network.
        vsum, _ = run_round(self.protocol, ctx, inputs, self.server_material, self.party_material)
        return self.server.apply(r, vsum), tuple(declined)
