"""A malicious party uploads an update past the parties' clip (x100) over real gRPC/mTLS. Before
issue #23 the coordinator checked only the weight and finiteness of the decoded sum and applied it.
Now the app's `sum_bound` (FLServerApp sets it from the config) reaches check_sum: the round is
rejected with the reason, nothing is applied, and the next round goes on."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from _deploy_helpers import expected_sums, metrics, provision, run_inprocess, server_state
from securefed.deploy.protocol_only import ProtocolOnlyServerApp
from securefed.robust.bounds import InputBound

PARTIES = ("p0", "p1", "p2")


def _scaled(ctx, pid, session):
    if ctx.round == 0:  # the plain party session holds its input; the attacker scales it before sending
        session.data = dataclasses.replace(session.data, delta=session.data.delta * 100)
    return session


@pytest.mark.parametrize("bounded", [False, True])
def test_an_oversized_update_is_rejected_only_with_the_bound(tmp_path, monkeypatch, bounded):
    if bounded:  # honest protocol-only inputs are 16 standard normals: |x| < 10 and ||x|| < 10 here
        monkeypatch.setattr(ProtocolOnlyServerApp, "sum_bound", InputBound(coord=10.0, norm=10.0), raising=False)
    fed = provision(tmp_path / "fed", PARTIES, "plain")
    results = run_inprocess(fed, hooks={"p2": _scaled})
    assert results["server"].rounds_completed == 2
    lines = metrics(fed)
    if not bounded:  # the weakened variant: the attacker's sum is applied
        assert [m["status"] for m in lines] == ["ok", "ok"]
        honest, _ = expected_sums(fed, {0: PARTIES, 1: PARTIES})
        assert np.max(np.abs(server_state(fed)["delta_sum"] - honest)) > 100  # the attack landed
        return
    assert [m["status"] for m in lines] == ["rejected", "ok"]
    assert "exceeds what clipped parties can send" in lines[0]["reason"]
    want, weight = expected_sums(fed, {1: PARTIES})  # round 0 applied nothing
    np.testing.assert_allclose(server_state(fed)["delta_sum"], want, rtol=1e-6, atol=1e-3)
    assert server_state(fed)["total_weight"] == pytest.approx(weight, rel=1e-6)
