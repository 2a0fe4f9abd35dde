"""The root config: TOML + --set overrides, errors that name the field and the allowed values."""

import pytest

from securefed.config import load_config, parse_override
from securefed.errors import ConfigError


def test_defaults_and_overrides():
    cfg = load_config(None, ["algorithm.name=fedadam", "rounds=20", "lora.target_modules=['q_proj']",
                             "data.partition.method=dirichlet", "data.partition.alpha=0.1"])
    assert cfg.algorithm.name == "fedadam" and cfg.rounds == 20
    assert cfg.lora.target_modules == ["q_proj"]
    assert cfg.data.partition.method == "dirichlet" and cfg.data.partition.alpha == 0.1
    assert cfg.aggregation.protocol == "plain"


def test_toml_file_then_override(tmp_path):
    p = tmp_path / "fed.toml"
    p.write_text('parties = 7\n[algorithm]\nname = "scaffold"\n[training]\nlr = 1e-3\n')
    cfg = load_config(p, ["parties=9"])
    assert cfg.parties == 9 and cfg.algorithm.name == "scaffold" and cfg.training.lr == 1e-3


def test_unknown_algorithm_names_field_and_choices():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["algorithm.name=fedsgd"])
    msg = str(e.value)
    assert "algorithm.name" in msg and "'fedavg'" in msg and "'local'" in msg and "fedsgd" in msg


@pytest.mark.parametrize(
    "override, field",
    [
        ("rounds=0", "rounds"),
        ("training.lr=-1", "training.lr"),
        ("aggregation.protocol=zip", "aggregation.protocol"),
        ("lora.r=0", "lora.r"),
        ("model.dtype=int8", "model.dtype"),
        ("data.partition.method=random", "data.partition.method"),
        ("algorithm.beta1=1.5", "algorithm.beta1"),
        ("algorithm.typo=1", "algorithm.typo"),
    ],
)
def test_bad_values_name_their_field(override, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(None, [override])


def test_sampling_count_cannot_exceed_parties():
    with pytest.raises(ConfigError, match="sampling.count"):
        load_config(None, ["parties=3", "sampling.count=4"])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("rounds = = 3")
    with pytest.raises(ConfigError, match="not valid"):
        load_config(bad)


def test_override_parsing():
    assert parse_override("a.b=3") == (["a", "b"], 3)
    assert parse_override("a=hello") == (["a"], "hello")
    assert parse_override("a=true") == (["a"], True)
    with pytest.raises(ConfigError):
        parse_override("novalue")


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(None, ["algorithm.name=fedyogi", "seed=5"])
    p = tmp_path / "config.json"
    p.write_text(cfg.to_json())
    assert load_config(p) == cfg


def test_dpo_with_example_level_dp_needs_hooks_mode():
    cfg = load_config(None, ["task=dpo", "privacy.mechanism=example", "privacy.noise_multiplier=1.0"])
    assert cfg.privacy.mechanism == "example" and cfg.privacy.grad_sample_mode == "auto"
    with pytest.raises(ConfigError, match="privacy.grad_sample_mode"):
        load_config(None, ["task=dpo", "privacy.mechanism=example", "privacy.noise_multiplier=1.0",
                           "privacy.grad_sample_mode=ghost"])
