"""PrivacyConfig validation: every error names the field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from securefed.privacy.config import PrivacyConfig, check_compatible


def _msg(**kw) -> str:
    with pytest.raises(ValidationError) as e:
        PrivacyConfig(**kw)
    return str(e.value)


def test_defaults_are_off():
    c = PrivacyConfig()
    assert c.mechanism == "none" and not c.enabled and c.target_delta == 1e-5


@pytest.mark.parametrize("kw,field", [
    ({"mechanism": "bogus"}, "mechanism"),
    ({"target_epsilon": -1}, "target_epsilon"),
    ({"target_epsilon": float("inf")}, "target_epsilon"),
    ({"target_delta": 1.5}, "target_delta"),
    ({"noise_multiplier": -0.1}, "noise_multiplier"),
    ({"max_grad_norm": 0}, "max_grad_norm"),
    ({"update_clip_norm": 0}, "update_clip_norm"),
    ({"accountant": "gdp"}, "accountant"),
    ({"modulus_bits": 40}, "modulus_bits"),
    ({"dropout_tolerance": 1.0}, "dropout_tolerance"),
    ({"on_budget_exhausted": "explode"}, "on_budget_exhausted"),
    ({"unknown_key": 1}, "unknown_key"),
])
def test_field_errors_name_the_field(kw, field):
    assert field in _msg(**kw)


def test_mechanism_needs_noise_or_target():
    m = _msg(mechanism="example")
    assert "privacy.target_epsilon" in m and "privacy.noise_multiplier" in m
    assert PrivacyConfig(mechanism="example", target_epsilon=4).enabled


def test_cross_section_checks_name_fields():
    d = PrivacyConfig(mechanism="user-distributed", noise_multiplier=1.0)
    with pytest.raises(ValueError, match="aggregation.secagg.clip"):
        check_compatible(d, "secagg", 0.3, 16, False)
    with pytest.raises(ValueError, match="privacy.modulus_bits"):
        check_compatible(d, "secagg", 1.0, 12, False)
    with pytest.raises(ValueError, match="algorithm.name"):
        check_compatible(d, "plain", 1.0, 16, True)
    check_compatible(d, "secagg", 0.5, 16, False)  # ok


def test_audit_refusals_name_fields():
    amp = PrivacyConfig(mechanism="user-distributed", noise_multiplier=1.0, sampling_amplification=True)
    with pytest.raises(ValueError, match="privacy.sampling_amplification"):
        check_compatible(amp, "secagg", 1.0, 16, False)
    prv = PrivacyConfig(mechanism="user-distributed", noise_multiplier=1.0, accountant="prv")
    with pytest.raises(ValueError, match="privacy.accountant"):
        check_compatible(prv, "secagg", 1.0, 16, False)
    d = PrivacyConfig(mechanism="user-distributed", noise_multiplier=1.0)
    with pytest.raises(ValueError, match="privacy.distributed_over_plain"):
        check_compatible(d, "plain", 1.0, 16, False)
    check_compatible(PrivacyConfig(mechanism="user-distributed", noise_multiplier=1.0, distributed_over_plain=True),
                     "plain", 1.0, 16, False)
    central_amp = PrivacyConfig(mechanism="user-central", noise_multiplier=1.0, sampling_amplification=True)
    with pytest.raises(ValueError, match="aggregation.protocol='plain'"):
        check_compatible(central_amp, "secagg", 1.0, 16, False)
    check_compatible(central_amp, "plain", 1.0, 16, False)
