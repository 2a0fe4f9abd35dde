"""A deployment's coordinator applies the protocol's sum, so a robust rule (which needs every party's
update) is refused by the server app with one line instead of silently running the mean; the parties'
clip travels in the federation's config and becomes the coordinator's sum bound."""

from __future__ import annotations

import math

import pytest

from _fl_helpers import fl_overrides, provision_fl
from securefed.deploy.fl_apps import FLServerApp
from securefed.deploy.settings import load_federation
from securefed.errors import ConfigError


def test_a_robust_rule_is_refused_by_the_deployed_server_app(tmp_path, small_overrides):
    provision_fl(tmp_path / "fed", fl_overrides(small_overrides, 'aggregation.robust.rule="median"'))
    fed = load_federation(tmp_path / "fed" / "server" / "federation.json")
    with pytest.raises(ConfigError, match="runs in simulations only") as e:
        FLServerApp(fed)
    assert "\n" not in str(e.value)


def test_the_deployed_server_app_carries_the_sum_bound(tmp_path, small_overrides):
    provision_fl(tmp_path / "fed", fl_overrides(small_overrides, "aggregation.bound.norm=0.5"))
    app = FLServerApp(load_federation(tmp_path / "fed" / "server" / "federation.json"))
    # plain: no per-coordinate clip; the L2 bound is the update's 0.5 plus room for the parties' report
    # coordinates (each within 1.0 under plain), which ride in the same vector (round_report.sum_bound)
    from securefed.deploy import round_report

    assert math.isinf(app.sum_bound.coord)
    assert app.sum_bound.norm == math.hypot(0.5, math.sqrt(round_report.WIDTH) * 1.0)
