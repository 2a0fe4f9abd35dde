"""A round whose decoded sum is past the parties' clip is skipped, logged with the reason, and the
federation goes on (simulation; the deployment's coordinator uses the same check_sum + bound)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from securefed.config import load_config
from securefed.simulation import runner


def test_a_malicious_round_is_rejected_and_the_run_goes_on(tmp_path, small_overrides, monkeypatch):
    real = runner.party_input
    calls = {"n": 0}

    def one_attacker(result, layout, weight, clip=None):
        calls["n"] += 1
        data = real(result, layout, weight, clip)
        if calls["n"] == 1:  # round 1's first party skips its clip and scales its update x100
            return dataclasses.replace(data, delta=np.asarray(data.delta * 100 + 1e-3, np.float32))
        return data

    monkeypatch.setattr(runner, "party_input", one_attacker)
    out = tmp_path / "run"
    runner.simulate(load_config(None, small_overrides + ["aggregation.bound.norm=1.0"]), out)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2]
    assert "||delta||_2" in rows[0]["rejected"] and rows[0]["contributors"] == 0
    assert "rejected" not in rows[1] and rows[1]["contributors"] == 3
    assert "round 1: rejected by the plain protocol (decoded sum: ||delta||_2" in (out / "run.log").read_text()


def test_a_robust_rule_runs_in_the_simulation(tmp_path, small_overrides):
    out = tmp_path / "median"
    runner.simulate(load_config(None, small_overrides + ["rounds=1", 'aggregation.robust.rule="median"',
                                                         'algorithm.name="fedadam"']), out)
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert row["contributors"] == 3 and row["protocol_robust_kept"] == 3
