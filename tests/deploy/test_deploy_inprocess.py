"""Coordinator and parties as threads of this process over real gRPC/mTLS on 127.0.0.1, for every
registered protocol, including those whose material has no file codec yet: the test gives each a
process-local codec (a handle into a dict), which only works inside one process. Checks the
multi-stage relay, and a party that stalls past the stage timeout (a dropout by timeout, whose late
reply must be ignored)."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from _deploy_helpers import expected_sums, metrics, pick_drop, provision, run_inprocess, server_state
from securefed.protocols import registry

PARTIES = ("p0", "p1", "p2")
_HANDLES: dict[bytes, object] = {}
BASE = [n for n in registry.names() if not n.startswith("test-")]


def _with_local_codec(name: str):
    base = type(registry.create(name, None))

    class Local(base):  # type: ignore[misc, valid-type]
        def dump_material(self, material):
            handle = os.urandom(16)
            _HANDLES[handle] = material
            return handle

        def load_material(self, data):
            return _HANDLES[bytes(data)]

    return lambda config=None: Local(config)


for _name in BASE:
    if f"test-local-{_name}" not in registry.names():
        registry.register(f"test-local-{_name}", _with_local_codec(_name))


class _Stall:
    def __init__(self, inner, call, seconds):
        self.inner, self.left, self.seconds = inner, call, seconds

    def handle(self, message):
        self.left -= 1
        if self.left == 0:
            time.sleep(self.seconds)  # past the stage timeout: the server has moved on without us
        return self.inner.handle(message)


def _run(fed, hooks=None, timeout=60.0):
    return run_inprocess(fed, hooks, timeout)


def _close(fed, state, rounds, drop_at=None):
    want, weight = expected_sums(fed, rounds, drop_at)
    np.testing.assert_allclose(state["delta_sum"], want, rtol=1e-6, atol=1e-3)
    assert state["total_weight"] == pytest.approx(weight, rel=1e-6, abs=1e-3)


@pytest.mark.parametrize("base", BASE)
def test_multistage_relay_matches_driver(tmp_path, base):
    fed = provision(tmp_path / "fed", PARTIES, f"test-local-{base}")
    results = _run(fed)
    assert results["server"].rounds_completed == 2
    assert all(results[p].final_received and results[p].rounds_completed == 2 for p in PARTIES)
    _close(fed, server_state(fed), {0: PARTIES, 1: PARTIES})


@pytest.mark.parametrize("base", BASE)
def test_stalled_party_is_dropped_by_stage_timeout(tmp_path, base):
    parties = ("p0", "p1", "p2", "p3")  # masking needs more than 3 to survive a dropout
    fed = provision(tmp_path / "fed", parties, f"test-local-{base}", timeouts={"stage_s": 1.5})
    call, stage = pick_drop(fed, parties, "p3")
    stall = lambda ctx, pid, s: _Stall(s, call, 2.5) if ctx.round == 0 else s  # noqa: E731
    _run(fed, hooks={"p3": stall})
    lines = metrics(fed)
    assert [m["status"] for m in lines] == ["ok", "ok"]
    assert "p3" in lines[0]["dropouts"] and lines[1]["dropouts"] == []
    _close(fed, server_state(fed), {0: parties, 1: parties}, drop_at={0: {"p3": stage}})
