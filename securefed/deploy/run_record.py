"""The coordinator's folder as a run directory, so `securefed report` and `status` read a deployment
as they read a simulation:

    <server folder>/config.json     the federation's securefed config (from federation.json)
    <server folder>/metrics.jsonl   one row a round in the simulation's format: "round" = rounds done
                                    (1-based), counts, mean bytes per party, seconds, the parties'
                                    aggregated report (train_loss; eval_loss/accuracy/... of the
                                    global model, on the row of the model they scored; row 0 = the
                                    initial model), DP accounting
    <server folder>/summary.json    written when the federation finishes

Rows hold aggregates only: counts, never party ids (the transport log state/metrics.jsonl keeps the
per-attempt detail an operator needs). The file is small and rewritten atomically each round: a row
gains the held-out metrics of its model one round later.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from securefed.atomic import atomic_write_text
from securefed.deploy.round_report import HELDOUT_KEYS
from securefed.deploy.settings import FederationConfig

METRICS, SUMMARY, CONFIG = "metrics.jsonl", "summary.json", "config.json"


class RunRecord:
    def __init__(self, folder: Path, fed: FederationConfig) -> None:
        self.folder, self.fed = Path(folder), fed
        self.path = self.folder / METRICS

    def start(self, last_completed: int) -> None:
        """Keep the rows of checkpointed rounds (0-based last_completed; -1: none) and write config.json."""
        rows = [r for r in self.rows() if r["round"] <= last_completed + 1]
        if rows and rows[-1]["round"] == last_completed + 1:  # its held-out fields come from the next round
            rows[-1] = {k: v for k, v in rows[-1].items() if k not in HELDOUT_KEYS}
        self._write(rows)
        config = self.fed.app.get("config")
        if isinstance(config, dict):
            atomic_write_text(self.folder / CONFIG, json.dumps(config, indent=2) + "\n")

    def rows(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def add(self, record: dict[str, Any]) -> dict[str, Any]:
        """One finished round of the coordinator (its transport record) -> its run row (returned)."""
        app = dict(record.get("app") or {})
        heldout = dict(app.pop("heldout", None) or {})  # a copy: the record goes on to the progress display
        selected = record.get("selected") or []
        row: dict[str, Any] = {
            "round": record["round"] + 1, "algorithm": self.fed.algorithm, "protocol": self.fed.protocol,
            "selected": len(selected), "contributors": len(record.get("contributors") or []),
            "dropouts": len(record.get("dropouts") or []), "attempts": record.get("attempt", 0) + 1,
        }
        if record.get("status") != "ok":
            row["aborted"] = record.get("reason", record.get("status"))
        if selected:
            row["bytes_sent_per_party"] = sum(record.get("bytes_in", {}).get(p, 0) for p in selected) / len(selected)
            row["bytes_received_per_party"] = sum(record.get("bytes_out", {}).get(p, 0) for p in selected) / len(selected)
        # Aggregates only: per-party maps (dp_epsilon by party) stay in the transport log.
        row.update({k: v for k, v in app.items() if k not in ("contributors", "total_weight") and not isinstance(v, dict)})
        row["seconds"] = record.get("durations", {}).get("total_s", 0.0)
        rows = [r for r in self.rows() if r["round"] < row["round"]]
        if heldout:
            at = heldout.pop("model_round")
            target = next((r for r in rows if r["round"] == at), None)
            if target is None:  # the initial model (row 0) or a row lost before a restart
                target = {"round": at}
                rows = sorted([*rows, target], key=lambda r: r["round"])
            target.update(heldout)
        self._write([*rows, row])
        return row

    def finish(self, summary: dict[str, Any]) -> None:
        rows = self.rows()
        atomic_write_text(self.folder / SUMMARY, json.dumps({
            "algorithm": self.fed.algorithm, "protocol": self.fed.protocol, "rounds": self.fed.rounds,
            "parties": len(self.fed.parties), "model": self.fed.model, **summary,
            "first": rows[0] if rows else None, "final": rows[-1] if rows else None}, indent=2) + "\n")

    def _write(self, rows: list[dict[str, Any]]) -> None:
        atomic_write_text(self.path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))

