"""Load: 50 party processes, a few rounds, loopback only. Nothing may be lost: every round has all 50
contributors and the final sum equals the in-process driver's."""

from __future__ import annotations

import numpy as np
import pytest

from _deploy_helpers import expected_sums, server_state
from securefed.deploy.localrun import run_local_federation

N = 50


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_fifty_parties_three_rounds(tmp_path):
    run = run_local_federation(tmp_path, N, rounds=3, vector_len=64, timeout_s=75)
    assert run.server_rc == 0
    assert set(run.party_rcs.values()) == {0}
    parties = sorted(run.federation.party_dirs)
    assert [(r["round"], r["status"], len(r["contributors"])) for r in run.rounds] == [
        (0, "ok", N), (1, "ok", N), (2, "ok", N)]
    want, weight = expected_sums(run.federation, {r: parties for r in range(3)})
    state = server_state(run.federation)
    np.testing.assert_array_equal(state["delta_sum"], want)
    assert state["total_weight"] == weight
    figures = run.figures()
    print(figures)
    assert figures["min_contributors"] == N
