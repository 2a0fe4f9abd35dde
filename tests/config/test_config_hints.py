"""A misspelt config key names the closest valid key and every valid key of its section."""

from __future__ import annotations

import pytest

from securefed.config import load_config
from securefed.errors import ConfigError


@pytest.mark.parametrize(("override", "expected"), [
    ("trainin.lr=1e-3", "trainin: unknown key; did you mean training? (valid keys at the top level: aggregation, "),
    ("training.lrr=1e-3", "training.lrr: unknown key; did you mean training.lr? (valid keys of training: "),
    ("aggregation.secagg.clpi=2", "did you mean aggregation.secagg.clip? (valid keys of aggregation.secagg: clip, "),
    ("data.partition.metod=iid", "did you mean data.partition.method? (valid keys of data.partition: alpha, column, "
                                 "method)"),
])
def test_typo_names_closest_key_and_section_keys(override, expected):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert expected in str(err.value)


def test_unknown_key_without_a_close_match_still_lists_the_valid_keys():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["model.colour=red"])
    message = str(err.value)
    assert "model.colour: unknown key (valid keys of model: " in message and "did you mean" not in message
    assert "name_or_path" in message


def test_toml_file_typo_gets_the_same_hint(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[trainng]\nlr = 0.1\n")
    with pytest.raises(ConfigError, match="trainng: unknown key; did you mean training?"):
        load_config(path)
