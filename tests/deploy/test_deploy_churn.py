"""Churn, scaled down from benchmarks/churn.py: party processes on loopback, some of them killed
every round at a random protocol stage and restarted. secagg: 30 processes, a tenth killed (before or
after upload, during unmasking; the benchmark kills a fifth: here fewer, so that a round spent by
deaths during unmasking rarely leaves none completed). threshold he: 20 processes (30 took 140 s here,
most of it 30 processes of 140 MiB starting on 2 shared cores), a fifth killed (input, sign,
decrypt), as in the benchmark. Every round completes or is rejected (a spent round is skipped: the coordinator never
stops), every completed round's sum equals its contributors' inputs within the quantisation bound,
and no process ends with an unhandled exception."""

from __future__ import annotations

import pytest

from securefed.deploy.churn import run_churn
from securefed.protocols.he.threshold.keys import threshold_for
from securefed.protocols.secagg import SecAggConfig

N, N_HE, ROUNDS = 30, 20, 3


def _check(run, n: int, floor: int) -> None:
    fig = run.figures()
    print(fig)
    assert run.server_rc == 0 and fig["rounds_completed"] >= 1
    assert fig["rounds_completed"] + fig["rounds_rejected"] == ROUNDS  # spent rounds are skipped, not lost
    assert len(run.kills) >= ROUNDS  # victims did die (the last round's may outlive the federation)
    assert all(floor <= c <= n for c in fig["contributors_per_round"])
    assert fig["sums_within_bound"], run.sum_errors
    assert run.tracebacks == [] and run.odd_exits == [] and fig["final_unplanned_rcs"] == 0


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_thirty_parties_with_a_tenth_killed_every_round(tmp_path):
    run = run_churn(tmp_path, N, rounds=ROUNDS, kill_fraction=0.1, protocol="secagg", timeout_s=200, seed=3)
    _check(run, N, SecAggConfig().resolve(N)[2])  # t: fixed by the invited set's graph, whoever dies


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_twenty_he_parties_with_a_fifth_killed_every_round(tmp_path):
    run = run_churn(tmp_path, N_HE, rounds=ROUNDS, kill_fraction=0.2, protocol="he", timeout_s=200, seed=0)
    _check(run, N_HE, threshold_for(N_HE, 0.5))  # every decrypted set has at least t contributors
