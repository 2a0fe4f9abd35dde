"""The model card states the DP guarantee exactly as the accountant reported it (per party where it
differs), says when there is none, and names the protocol's threat model."""

from __future__ import annotations

from pathlib import Path

from securefed.config import load_config
from securefed.export.card import THREAT_LINE, model_card
from securefed.export.run import RunRecord

ROW = {"round": 3, "dp_mechanism": "example", "dp_delta": 1e-05, "dp_epsilon_max": 2.718281828459045,
       "dp_epsilon": {"party-00": 2.5000000000000004, "party-01": 2.718281828459045}, "eval_loss": 1.25}


def _card(overrides, metrics=(ROW,), summary=None):
    cfg = load_config(None, ["parties=3", "rounds=3", *overrides])  # secagg needs >= 3
    run = RunRecord(Path("/runs/hospital-fl"), cfg, Path("/runs/hospital-fl/adapter"), tuple(metrics), summary or {})
    return model_card(run, base_name="HuggingFaceTB/SmolLM2-135M-Instruct", license_="apache-2.0", merged=False,
                      gguf_files=[], chat_template_added=False, version="0.1.0")


def test_example_level_epsilon_is_copied_exactly_per_party():
    card = _card(["privacy.mechanism='example'", "privacy.noise_multiplier=1.0", "aggregation.protocol='secagg'"])
    assert "epsilon (max over parties): 2.718281828459045 (after round 3)" in card
    assert "party-00: 2.5000000000000004" in card and "party-01: 2.718281828459045" in card
    assert "delta: 1e-05" in card and "accountant: `rdp`" in card and "privacy unit: example" in card
    assert THREAT_LINE["secagg"] in card and "No formal privacy guarantee" not in card
    meta = card.split("---")[1]
    assert 'license: "apache-2.0"' in meta and '"differential-privacy"' in meta and '"secure-aggregation"' in meta


def test_one_epsilon_when_parties_agree_and_user_level_unit():
    row = {**ROW, "dp_mechanism": "user-central", "dp_epsilon": {"party-00": 1.5, "party-01": 1.5}}
    card = _card(["privacy.mechanism='user-central'", "privacy.noise_multiplier=1.0"], [row])
    assert "epsilon: 1.5 (every party; after round 3)" in card and "privacy unit: user" in card


def test_no_dp_says_no_formal_guarantee_and_unreported_dp_says_so():
    plain = _card([], [{"round": 3, "eval_loss": 1.0}])
    assert "No formal privacy guarantee" in plain and "the server also saw every party's update" in plain
    assert "hides individual updates" not in plain  # plain hides nothing
    masked = _card(["aggregation.protocol='secagg'"], [{"round": 3, "eval_loss": 1.0}])
    assert "No formal privacy guarantee" in masked and "hides individual updates" in masked
    card = _card(["privacy.mechanism='example'", "privacy.target_epsilon=4.0"], [{"round": 3}])
    assert "epsilon: **not reported**" in card and "No formal privacy guarantee" not in card


def test_heldout_rows_from_the_summary():
    held = {"round": 3, "split": "test", "rows": 120, "metrics": {"eval_loss": 0.5, "accuracy": 0.75}}
    card = _card([], [{"round": 3}], {"heldout": held})
    assert "Scored on 120 held-out rows of the test split" in card and "| accuracy | 0.75 |" in card
    assert THREAT_LINE["plain"] in card
