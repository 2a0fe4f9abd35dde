"""A deployment is observable like a simulation: each party's training loss and held-out metrics of
the global model travel inside the protected vector, and the server learns their weighted means over
the round's contributors only; the coordinator keeps them per round in a run directory."""

from __future__ import annotations

import json

import numpy as np
import pytest

from _fl_helpers import PARTIES, InProcessFederation, fl_overrides, provision_fl, write_party_data
from securefed.config import load_config
from securefed.deploy import round_report
from securefed.deploy.run_record import RunRecord
from securefed.deploy.settings import load_federation
from securefed.protocols.base import PartyInput, VectorSum


def _weighted(values: dict[str, float], weights: dict[str, float]) -> float:
    return sum(values[p] * weights[p] for p in values) / sum(weights[p] for p in values)


def test_secagg_server_learns_the_weighted_means_of_the_parties_reports(tmp_path, small_overrides):
    data = write_party_data(tmp_path)
    provision_fl(tmp_path / "fed", fl_overrides(small_overrides, "aggregation.protocol=secagg"))
    fed = InProcessFederation(tmp_path / "fed", data, tmp_path / "state")
    weights = {p: float(len(c.data)) for p, c in fed.clients.items()}
    for r in range(2):
        server_metrics, _ = fed.run_round(r)
        own = {p: c.last_report for p, c in fed.clients.items()}
        # the secagg fixed point: clip / 2^16 per party-weight unit, far below these tolerances
        assert server_metrics["train_loss"] == pytest.approx(
            _weighted({p: o["train_loss"] for p, o in own.items()}, weights), abs=1e-3)
        held = server_metrics["heldout"]
        assert held["model_round"] == r and held["heldout_weight_share"] == pytest.approx(1.0)
        for key in ("eval_loss", "accuracy", "unparseable"):
            assert held[key] == pytest.approx(_weighted({p: o["heldout"][key] for p, o in own.items()}, weights),
                                              abs=1e-3), key
        # no party's own value is in what the server got: only the means
        assert not any(held["eval_loss"] == pytest.approx(o["heldout"]["eval_loss"], abs=1e-6) for o in own.values())


def test_report_coordinates_only_ride_when_allowed(tmp_path, small_overrides):
    on = load_config(None, small_overrides)
    assert round_report.width(on) == round_report.WIDTH
    assert round_report.width(load_config(None, small_overrides + ["evaluation.party_metrics=off"])) == 0
    # not covered by DP: off under a mechanism unless the federation says "on"
    dp = ["privacy.mechanism=example", "privacy.noise_multiplier=1.0"]
    assert round_report.width(load_config(None, small_overrides + dp)) == 0
    assert round_report.width(load_config(None, small_overrides + dp + ["evaluation.party_metrics=on"])) > 0
    with pytest.raises(Exception, match="party_metrics 'on' cannot ride user-distributed"):
        load_config(None, small_overrides + ["privacy.mechanism=user-distributed", "evaluation.party_metrics=on",
                                             "privacy.noise_multiplier=1.0",
                                             "aggregation.protocol=secagg"])


def test_split_recovers_means_and_leaves_the_update_and_control_alone(small_overrides):
    cfg = load_config(None, small_overrides + ["aggregation.protocol=secagg", "aggregation.secagg.clip=0.01"])
    reports = {"a": round_report.encode(cfg, 2.0, {"eval_loss": 3.0, "accuracy": 0.5, "macro_f1": 0.4,
                                                   "unparseable": 0.0}),
               "b": round_report.encode(cfg, 4.0, None),  # did not evaluate this round
               "c": round_report.encode(cfg, 40.0, {"eval_loss": 1.0, "accuracy": 1.0, "macro_f1": 1.0,
                                                    "unparseable": 0.0})}
    assert all(r.max() <= 0.01 + 1e-9 and r.min() >= 0 for r in reports.values())  # within the protocol's clip
    w = {"a": 1.0, "b": 2.0, "c": 3.0}
    inputs = {p: round_report.append(PartyInput(np.full(4, 0.1, np.float32), np.ones(4, np.float32), w[p]),
                                     reports[p]) for p in w}
    delta = sum(w[p] * inputs[p].delta.astype(np.float64) for p in w)
    control = sum(inputs[p].control_delta.astype(np.float64) for p in w)
    update, out = round_report.split(cfg, VectorSum(delta, control, 6.0, tuple(w)), 4)
    assert np.allclose(update.delta_sum, 0.6) and np.allclose(update.control_sum, 3.0)
    assert out["train_loss"] == pytest.approx((2 * 1 + 4 * 2 + 32 * 3) / 6)  # 40 is reported as LOSS_CAP
    assert out["heldout_weight_share"] == pytest.approx(4 / 6)
    assert out["eval_loss"] == pytest.approx((3 * 1 + 1 * 3) / 4) and out["accuracy"] == pytest.approx(3.5 / 4)
    assert "preference_accuracy" not in out  # nobody reported it


def test_run_record_places_heldout_metrics_on_the_model_they_scored(tmp_path, small_overrides):
    paths = provision_fl(tmp_path / "fed", fl_overrides(small_overrides))
    fed = load_federation(paths.server_dir / "federation.json")
    run = RunRecord(paths.server_dir, fed)
    run.start(-1)

    def record(r, loss, acc):
        return {"round": r, "attempt": 0, "status": "ok", "selected": list(PARTIES), "contributors": list(PARTIES),
                "dropouts": [], "bytes_in": {p: 100 for p in PARTIES}, "bytes_out": {p: 50 for p in PARTIES},
                "durations": {"total_s": 1.5},
                "app": {"contributors": 3, "total_weight": 9.0, "train_loss": loss, "dp_epsilon": {"x": 1.0},
                        "heldout": {"model_round": r, "eval_loss": loss + 1, "accuracy": acc}}}

    first = record(0, 2.0, 0.3)
    run.add(first)
    assert first["app"]["heldout"]["model_round"] == 0  # the progress line reads the record after
    run.add(record(1, 1.5, 0.6))
    rows = run.rows()
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert rows[0] == {"round": 0, "eval_loss": 3.0, "accuracy": 0.3}  # the initial model
    assert rows[1]["train_loss"] == 2.0 and rows[1]["accuracy"] == 0.6 and rows[1]["bytes_sent_per_party"] == 100
    assert "accuracy" not in rows[2] and "dp_epsilon" not in rows[1]  # aggregates only: no per-party map
    assert not any(p in json.dumps(rows) for p in PARTIES)
    # a restart after round 1 (0-based 0) redoes round 2: its row goes, and row 1 loses what round 2 scored
    run.start(0)
    assert [r["round"] for r in run.rows()] == [0, 1] and "accuracy" not in run.rows()[1]
    assert json.loads((paths.server_dir / "config.json").read_text())["rounds"] == fed.rounds


def test_status_without_a_coordinator_reads_the_folder(tmp_path, small_overrides):
    from typer.testing import CliRunner

    from securefed.cli.app import app

    paths = provision_fl(tmp_path / "fed", fl_overrides(small_overrides))
    res = CliRunner().invoke(app, ["status", "--federation", str(paths.server_dir)])  # nobody listens
    assert res.exit_code == 0, res.output
    server = json.loads(res.stdout)
    assert "not reachable" in server["coordinator"] and server["rounds_completed"] == 0 and not server["finished"]
    res = CliRunner().invoke(app, ["status", "--federation", str(paths.party_dirs[PARTIES[0]])])
    party = json.loads(res.stdout)
    assert res.exit_code == 0 and party["final_adapter"] is False and "rounds_completed" not in party


def test_sum_bound_admits_honest_parties_at_the_norm_clip_with_their_reports(small_overrides):
    """Report coordinates ride beside an update clipped to aggregation.bound.norm: honest parties at the
    clip must pass the coordinator's L2 check (the update alone's bound would reject them), and a party
    past the clip must still be caught."""
    from securefed.protocols.base import SumOutOfRange
    from securefed.robust.bounds import input_bound

    cfg = load_config(None, small_overrides + ["aggregation.protocol=secagg", "aggregation.secagg.clip=0.5",
                                               "aggregation.bound.norm=1.0"])
    assert round_report.width(cfg) > 0
    w = {"a": 2.0, "b": 3.0}
    edge = np.full(4, 0.5, np.float32)  # norm 1.0: at the clip, each coordinate at the protocol's clip
    full = {"train_loss": 32.0, "eval_loss": 32.0, "accuracy": 1.0, "macro_f1": 1.0, "unparseable": 1.0,
            "preference_accuracy": 1.0}
    report = round_report.encode(cfg, 32.0, full)  # every report coordinate at its largest
    inputs = {p: round_report.append(PartyInput(edge, None, w[p]), report) for p in w}
    honest = VectorSum(sum(w[p] * inputs[p].delta.astype(np.float64) for p in w), None, 5.0, tuple(w))
    with pytest.raises(SumOutOfRange):  # the update's own bound does not leave room for the reports
        input_bound(cfg).check(honest)
    round_report.sum_bound(cfg).check(honest)  # accepted
    cheat = VectorSum(honest.delta_sum * 1.5, None, 5.0, tuple(w))
    with pytest.raises(SumOutOfRange):
        round_report.sum_bound(cfg).check(cheat)
