"""A round the protocol cannot complete is skipped with a metrics line; the run goes on.

Before: a ProtocolAbort (too many dropouts, e.g. a Ray actor lost mid-protocol) or a DP budget stop
that left fewer parties than secagg's minimum raised out of `simulate` and lost the run."""

from __future__ import annotations

import json

from securefed.config import load_config
from securefed.protocols.base import ProtocolAbort
from securefed.simulation import runner


def test_aborted_round_keeps_the_model_and_the_run_goes_on(tmp_path, small_overrides, monkeypatch):
    real = runner.run_round
    calls = {"n": 0}

    def abort_first(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise ProtocolAbort("2 of 3 parties dropped")
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "run_round", abort_first)
    out = tmp_path / "run"
    runner.simulate(load_config(None, small_overrides + ["aggregation.protocol=secagg"]), out)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2]
    assert rows[0]["aborted"] == "2 of 3 parties dropped" and rows[0]["contributors"] == 0
    assert "aborted" not in rows[1] and rows[1]["contributors"] == 3
    assert "round 1: aborted by the secagg protocol" in (out / "run.log").read_text()


def test_too_few_admitted_parties_for_the_protocol_is_an_abort_not_a_crash(tmp_path, small_overrides):
    cfg = load_config(None, small_overrides + ["aggregation.protocol=secagg"])
    assert runner._protocol_floor(cfg, 2) == "party_ids: secagg needs >= 3 parties, got 2 (2 admitted)"
    assert runner._protocol_floor(cfg, 3) == ""
    he = load_config(None, small_overrides + ["aggregation.protocol=he"])  # threshold: t = 2, quorum 3 of 3
    assert runner._protocol_floor(he, 2).startswith("he: rounds select 2 of 3 parties but need 3 (t=2 decryptors, "
                                                    "a quorum of 3 signing")
    assert runner._protocol_floor(he, 3) == ""
    plain = load_config(None, small_overrides + ["aggregation.protocol=plain"])
    assert runner._protocol_floor(plain, 1) == ""
