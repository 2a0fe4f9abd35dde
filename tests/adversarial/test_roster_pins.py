"""A roster the operator made up: alice's own key beside operator-made keys for everyone else. The
operator then holds every other party's secret and reads alice's update from one round's sum. A
party that pinned the fingerprints its peers read out (`securefed keygen` prints them, `securefed
status --roster` lists the kit's) refuses that roster before any round; one that did not, runs it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from _deploy_helpers import provision_across
from securefed.deploy.keygen import keygen_party
from securefed.deploy.kit import load_party_kit
from securefed.deploy.roster import PINS, membership_of, request_fingerprint, roster_lines
from securefed.errors import ConfigError
from securefed.protocols.driver import run_round
from securefed.protocols.secagg import SecAgg

from _harness import context, make_inputs

PARTIES = ("alice", "bob", "carol", "dave")


def _kit(tmp_path, name: str, requests) -> dict:
    return provision_across(tmp_path / name, PARTIES, "secagg", requests)


def _install(kit_dir, machine) -> None:
    for f in kit_dir.iterdir():
        shutil.copy(f, machine / f.name)


def test_a_made_up_roster_is_refused_by_a_party_that_pinned_fingerprints(tmp_path) -> None:
    machines = {pid: tmp_path / "machines" / pid for pid in PARTIES}
    requests = {pid: keygen_party(machines[pid], pid, "secagg") for pid in PARTIES}
    told = {pid: request_fingerprint(requests[pid], "secagg") for pid in PARTIES}  # read out of band
    victim = tmp_path / "victim"  # alice's machine in the world where the operator sends her its roster
    shutil.copytree(machines["alice"], victim)
    honest = _kit(tmp_path, "honest", requests)
    _install(honest.party_dirs["alice"], machines["alice"])
    *lines, selection, seed = roster_lines(machines["alice"])
    assert seed.startswith("# seed: every member committed, then revealed")
    assert selection == f"# selection: all {len(PARTIES)} every round"
    assert [ln.split()[0] for ln in lines] == sorted(PARTIES)
    assert all(" ".join(ln.split()[1:9]) == told[ln.split()[0]] for ln in lines)
    (machines["alice"] / PINS).write_text("".join(f"{p}  {fp}\n" for p, fp in told.items()))
    load_party_kit(machines["alice"]).protocol_and_material()  # the honest roster passes the pins

    # The operator's roster: alice's real request, its own keys for the others.
    fakes = {pid: keygen_party(tmp_path / "op-keys" / pid, pid, "secagg") for pid in PARTIES if pid != "alice"}
    bad = _kit(tmp_path, "made-up", {"alice": victim / "request", **fakes})
    _install(bad.party_dirs["alice"], victim)

    # Weakened (no pins): the kit loads and a round runs; the operator, holding every other secret,
    # subtracts their inputs from the sum and has alice's update.
    proto, alice_material = load_party_kit(victim).protocol_and_material()
    others = {pid: load_party_kit(_own(tmp_path, pid, bad)).protocol_and_material()[1] for pid in fakes}
    server_material = load_party_kit(victim).protocol_and_material()  # same pinned table
    ids = PARTIES_SORTED = tuple(sorted(PARTIES))
    ctx = membership_of(bad.config).check(context(ids, 8, round_=0))
    inputs = make_inputs(ids, 8, 9)
    sm = SecAgg().load_material(SecAgg().dump_material(_table(alice_material)))
    vsum, _ = run_round(SecAgg(proto.config), ctx, inputs, sm, {"alice": alice_material, **others})
    leaked = vsum.delta_sum - sum(inputs[p].delta * inputs[p].weight for p in PARTIES_SORTED if p != "alice")
    assert np.allclose(leaked, inputs["alice"].delta * inputs["alice"].weight, atol=1e-2)
    assert server_material is not None

    # Real: with the pins alice was given, the made-up roster is refused at start, in one line.
    shutil.copy(machines["alice"] / PINS, victim / PINS)
    with pytest.raises(ConfigError, match="pinned"):
        load_party_kit(victim).protocol_and_material()
    assert "!= pinned" in "\n".join(roster_lines(victim))
    # A roster whose reveal does not open its commitment is named by the listing, as refused at start.
    fed_json = json.loads((victim / "federation.json").read_text())
    (bob,) = [p for p in fed_json["parties"] if p["id"] == "bob"]
    bob["seed_reveal"] = "00" * 32
    (victim / "federation.json").write_text(json.dumps(fed_json))
    assert roster_lines(victim)[-1] == "# seed: no reveal that opens its commitment from bob (a kit refuses this roster)"


def _own(tmp_path, pid: str, fed) -> object:
    machine = tmp_path / "op-keys" / pid
    _install(fed.party_dirs[pid], machine)
    return machine


def _table(material):
    from securefed.protocols.secagg.provisioning import ServerMaterial

    return ServerMaterial(material.identity_keys)


def test_material_that_differs_from_the_listed_keys_is_refused(tmp_path) -> None:
    """The operator lists the honest fingerprints but hands alice a key table of its own making."""
    machines = {pid: tmp_path / "m" / pid for pid in PARTIES}
    requests = {pid: keygen_party(machines[pid], pid, "secagg") for pid in PARTIES}
    shutil.copytree(machines["alice"], tmp_path / "alice-elsewhere")  # her keys, for the operator's roster
    honest = _kit(tmp_path, "honest", requests)
    fakes = {pid: keygen_party(tmp_path / "op" / pid, pid, "secagg") for pid in PARTIES if pid != "alice"}
    bad = _kit(tmp_path, "bad", {"alice": tmp_path / "alice-elsewhere" / "request", **fakes})
    _install(honest.party_dirs["alice"], machines["alice"])
    shutil.copy(bad.party_dirs["alice"] / "party-public.bin", machines["alice"] / "party-public.bin")
    with pytest.raises(ConfigError, match="protocol key of"):
        load_party_kit(machines["alice"]).protocol_and_material()
