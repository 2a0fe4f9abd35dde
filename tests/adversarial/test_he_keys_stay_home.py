"""Threshold `he` keys are made on the parties' machines (folders here), in two phases: phase 1
(identity, key-share commitment), then, from the operator's roster, phase 2 (the key share itself
and Shamir shares of it encrypted to each peer). The operator only relays public bytes: nothing a
party keeps secret is anywhere under the operator's folder, and the federation runs from the
parties' own folders."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from _deploy_helpers import expected_sums, fast_settings, run_inprocess, server_state
from securefed.deploy.keygen import PUBLIC2, REQUEST, ROSTER, SECRET, keygen_finish, keygen_party
from securefed.deploy.kit import load_party_kit
from securefed.deploy.provision import FederationPaths, KeygenPhasePending, provision_federation
from securefed.protocols.he import ThresholdPartyMaterial
from securefed.protocols.he.threshold import keys as tkeys

PARTIES = ("alice", "bob", "carol")


def test_he_threshold_keys_never_reach_the_operator(tmp_path) -> None:
    machines = {pid: tmp_path / "machines" / pid for pid in PARTIES}
    requests = {pid: keygen_party(machines[pid], pid, "he") for pid in PARTIES}
    # The operator publishes the phase-1 roster; every party deals its shares on its own machine.
    settings = fast_settings()
    with pytest.raises(KeygenPhasePending):
        provision_federation(tmp_path / "operator", PARTIES, "127.0.0.1", "he", None, settings, requests=requests)
    roster = tmp_path / "exchange" / ROSTER
    roster.parent.mkdir()
    shutil.copy(tmp_path / "operator" / ROSTER, roster)
    for pid in PARTIES:
        keygen_finish(machines[pid], roster, "he")
    # Run again by mistake: the same deal, not a second one (recipients holding shares of two different
    # deals of bob's key could never decrypt together, and nothing would say why).
    dealt = [(machines["bob"] / f).read_bytes() for f in (SECRET, f"{REQUEST}/{PUBLIC2}")]
    keygen_finish(machines["bob"], roster, "he")
    assert [(machines["bob"] / f).read_bytes() for f in (SECRET, f"{REQUEST}/{PUBLIC2}")] == dealt
    fed = provision_federation(tmp_path / "operator", PARTIES, "127.0.0.1", "he", None, settings, requests=requests)
    for pid in PARTIES:
        for f in fed.party_dirs[pid].iterdir():
            shutil.copy(f, machines[pid] / f.name)
    operator_blobs = [p.read_bytes() for p in (tmp_path / "operator").rglob("*") if p.is_file()]
    operator_blobs += [roster.read_bytes()]
    materials = {}
    for pid in PARTIES:
        material = load_party_kit(machines[pid]).protocol_and_material()[1]
        assert isinstance(material, ThresholdPartyMaterial)
        materials[pid] = material
        secrets = [material.sign_key, material.sign_key.hex().encode(), tkeys.elem_bytes(material.s_ntt)[:64],
                   tkeys.elem_bytes(material.s_ntt)[:64].hex().encode()]
        secrets += [tkeys.elem_bytes(s)[:64] for d, s in material.shares.items()]
        secrets += [tkeys.elem_bytes(s)[:64].hex().encode() for d, s in material.shares.items()]
        for secret in secrets:
            assert not any(secret in blob for blob in operator_blobs), pid
    assert len({m.public.key_id for m in materials.values()}) == 1
    # The federation runs from the parties' own folders and sums as the in-process driver does.
    from_machines = FederationPaths(fed.root, fed.ca_dir, fed.server_dir, machines, fed.config)
    assert run_inprocess(from_machines)["server"].rounds_completed == 2
    np.testing.assert_allclose(server_state(from_machines)["delta_sum"],
                               expected_sums(from_machines, {0: PARTIES, 1: PARTIES})[0], rtol=1e-6, atol=1e-3)
