"""The deployment commands say what to do next: a request that is not in --parties is named, a kit not
copied yet names the folder to copy, the second keygen phase (every protocol: the seed reveal; he:
also the key shares) is a next step (exit 0), and `keygen --finish` says it finished phase 2."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from securefed.cli.app import app

HE = "aggregation.protocol=he"


def _keygen(tmp_path, party, *protocol):
    sets = [a for p in protocol for a in ("--set", p)]
    res = CliRunner().invoke(app, ["keygen", "--party", party, "--out", str(tmp_path / party), *sets])
    assert res.exit_code == 0, res.output
    return res.output


def test_a_request_not_in_parties_is_named(tmp_path):
    for pid in ("alice", "bob", "dave"):
        _keygen(tmp_path, pid)
    res = CliRunner().invoke(app, [
        "provision", "--parties", "alice,bob,carol", "--server-host", "127.0.0.1", "--out", str(tmp_path / "fed"),
        *[a for pid in ("alice", "bob", "dave") for a in ("--request", str(tmp_path / pid / "request"))]])
    assert res.exit_code == 2
    out = " ".join(res.output.split())
    assert "party 'dave''s request, and 'dave' is not in --parties" in out and "no request folder for party 'carol'" in out
    res = CliRunner().invoke(app, [
        "provision", "--parties", "alice,bob", "--server-host", "h", "--out", str(tmp_path / "fed"),
        "--request", str(tmp_path / "alice" / "request"), "--request", str(tmp_path / "alice" / "request")])
    assert res.exit_code == 2 and "both party 'alice'" in res.output


def test_a_kit_not_copied_yet_names_what_to_copy(tmp_path):
    _keygen(tmp_path, "alice")
    res = CliRunner().invoke(app, ["client", "--kit", str(tmp_path / "alice"), "--data", "x.jsonl"])
    out = " ".join(res.output.split())
    assert res.exit_code == 2 and "no ca.pem, party.pem, federation.json yet" in out and "(OUT/<party>/)" in out
    assert "cannot read federation file" not in out


@pytest.mark.parametrize("protocol", ["aggregation.protocol=secagg", HE])
def test_the_second_keygen_phase_is_a_next_step(tmp_path, protocol):
    parties = ("alice", "bob", "carol")
    assert "--finish roster.json" in " ".join(_keygen(tmp_path, "alice", protocol).split())
    for pid in parties[1:]:
        _keygen(tmp_path, pid, protocol)
    provision = ["provision", "--parties", ",".join(parties), "--server-host", "127.0.0.1", "--out",
                 str(tmp_path / "fed"), "--set", protocol,
                 *[a for pid in parties for a in ("--request", str(tmp_path / pid / "request"))]]
    res = CliRunner().invoke(app, provision)
    out = " ".join(res.output.split())
    assert res.exit_code == 0 and "error" not in out and "Next: give roster.json to every party" in out
    roster = tmp_path / "fed" / "roster.json"
    for pid in parties:
        res = CliRunner().invoke(app, ["keygen", "--party", pid, "--out", str(tmp_path / pid), "--set", protocol,
                                       "--finish", str(roster)])
        assert res.exit_code == 0 and "phase 2 done" in res.output, res.output
    res = CliRunner().invoke(app, provision)
    assert res.exit_code == 0 and "written to" in res.output, res.output
