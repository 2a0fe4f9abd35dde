"""Settings a protocol cannot finish a round with are refused at config time, in one line, before any
training (a secagg run of 2 parties used to train every round and then abort each one)."""

import pytest

from securefed.config import load_config
from securefed.deploy.fl_apps import check_deployable
from securefed.errors import ConfigError

SECAGG = 'aggregation.protocol="secagg"'


@pytest.mark.parametrize("overrides, says", [
    (["parties=1", SECAGG], "secagg needs >= 3 parties a round"),
    (["parties=2", SECAGG], "parties = 2"),
    (["parties=6", "sampling.count=2", SECAGG], "sampling selects 2 of 6"),
    (["parties=10", "sampling.fraction=0.2", SECAGG], "sampling selects 2 of 10"),
    (["parties=5", "aggregation.secagg.threshold=5", SECAGG], "threshold=5 exceeds the 4 neighbours"),
])
def test_secagg_rounds_too_small_are_refused(overrides, says):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    msg = str(e.value)
    assert says in msg and "\n" not in msg and "Value error" not in msg


def test_smallest_workable_settings_load():
    assert load_config(None, ["parties=3", SECAGG]).parties == 3
    assert load_config(None, ["parties=1"]).parties == 1  # plain: a party alone is a (useless) round


def test_deployment_rechecks_on_its_real_party_count_and_quorum():
    cfg = load_config(None, ["parties=4", SECAGG])  # the config's own count is not the deployment's
    with pytest.raises(ConfigError, match="parties = 2"):
        check_deployable(cfg, 2, 2)
    with pytest.raises(ConfigError, match="--min-parties 2: a round may start with that many, but secagg"):
        check_deployable(cfg, 4, 2)
    with pytest.raises(ConfigError, match="--min-parties 5"):
        check_deployable(cfg, 4, 5)
    assert check_deployable(cfg, 5, 3).parties == 5
    with pytest.raises(ConfigError, match=r"sampling.count \(3\) exceeds parties \(2\)"):
        check_deployable(load_config(None, ["parties=4", "sampling.count=3"]), 2, 2)
