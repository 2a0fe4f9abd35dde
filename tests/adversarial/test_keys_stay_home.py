"""Keys generated where they are used: parties run keygen on their own machines (folders here), the
operator provisions from their requests only. v1: `provision` generated every party's TLS key and
Ed25519 identity key on the operator's machine, so whoever ran it could sign as any party."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from _deploy_helpers import expected_sums, provision_across, run_inprocess, server_state
from securefed.deploy.keygen import PARTY_PUBLIC, keygen_party
from securefed.deploy.kit import load_party_kit
from securefed.deploy.pki import make_csr
from securefed.deploy.provision import FederationPaths, provision_federation
from securefed.errors import ConfigError
from securefed.protocols.secagg import SecAgg
from securefed.protocols.secagg.provisioning import PartyMaterial

PARTIES = ("alice", "bob", "carol")


def _federation(tmp_path, protocol="secagg"):
    machines = {pid: tmp_path / "machines" / pid for pid in PARTIES}
    requests = {pid: keygen_party(machines[pid], pid, protocol) for pid in PARTIES}
    fed = provision_across(tmp_path / "operator", PARTIES, protocol, requests)
    for pid in PARTIES:  # each party copies its public kit next to its keys
        for f in fed.party_dirs[pid].iterdir():
            shutil.copy(f, machines[pid] / f.name)
    return fed, machines


def _secrets(machine) -> list[bytes]:
    pem = (machine / "party-key.pem").read_bytes()
    key = load_pem_private_key(pem, None)
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    scalar = key.private_numbers().private_value.to_bytes(32, "big")
    material = load_party_kit(machine).protocol_and_material()[1]
    assert isinstance(material, PartyMaterial)
    ed = bytes(material.signing_key)
    return [pem, der, scalar, scalar.hex().encode(), ed, ed.hex().encode()]


def test_no_party_secret_on_the_operator_machine_and_the_federation_runs(tmp_path) -> None:
    fed, machines = _federation(tmp_path)
    blobs = [p.read_bytes() for p in (tmp_path / "operator").rglob("*") if p.is_file()]
    assert blobs and not [p for p in (tmp_path / "operator").rglob("*") if p.name in ("party-key.pem", "protocol-secret.bin")]
    for pid in PARTIES:
        for secret in _secrets(machines[pid]):
            assert not any(secret in blob for blob in blobs), pid
    # The parties run from their own folders (keys made there), over real gRPC/mTLS.
    run = FederationPaths(fed.root, fed.ca_dir, fed.server_dir, machines, fed.config)
    results = run_inprocess(run)
    assert results["server"].rounds_completed == 2
    want, weight = expected_sums(run, {0: PARTIES, 1: PARTIES})
    state = server_state(run)
    np.testing.assert_allclose(state["delta_sum"], want, rtol=1e-6, atol=1e-3)
    assert state["total_weight"] == pytest.approx(weight, rel=1e-6, abs=1e-3)


def test_party_refuses_a_pinned_key_that_is_not_its_own(tmp_path) -> None:
    """Key substitution by the operator: alice's pinned identity key replaced by the operator's."""
    fed, machines = _federation(tmp_path)
    proto = SecAgg()
    secret, public = proto.party_keygen("alice")
    roster = {pid: load_party_kit(machines[pid]).protocol_and_material()[1].identity_keys[pid] for pid in PARTIES}
    _, forged = proto.assemble({**roster, "alice": public}, {})
    text = (machines["alice"] / PARTY_PUBLIC).read_text()
    (machines["alice"] / PARTY_PUBLIC).write_text(text.replace(text.split('"public": "')[1].split('"')[0], forged["alice"].hex()))
    with pytest.raises(ConfigError, match="not this party's key"):
        load_party_kit(machines["alice"]).protocol_and_material()


def test_operator_refuses_bad_requests(tmp_path) -> None:
    machines = {pid: tmp_path / "m" / pid for pid in PARTIES}
    requests = {pid: keygen_party(machines[pid], pid, "secagg") for pid in PARTIES}
    _, other = make_csr("mallory")  # bob's request carries a CSR for another name
    (requests["bob"] / "party.csr.pem").write_bytes(other)
    with pytest.raises(ConfigError, match="names another party"):
        provision_federation(tmp_path / "op", PARTIES, "h", "secagg", requests=requests)
    assert not (tmp_path / "op" / "server").exists()  # nothing half-written
    with pytest.raises(ConfigError, match="made for protocol"):
        provision_federation(tmp_path / "op", PARTIES, "h", "plain", requests=requests)
    with pytest.raises(ConfigError, match="made for party"):
        provision_federation(tmp_path / "op", PARTIES, "h", "secagg",
                             requests={**requests, "carol": requests["alice"]})
    with pytest.raises(ConfigError, match="already holds keys"):
        keygen_party(machines["alice"], "alice", "secagg")


class _TwoPhase:
    """A protocol whose keygen has a second phase (as threshold HE will): each party's public2 must
    depend on everyone's phase-1 keys, and the operator only relays bytes."""

    name = "test-two-phase"

    def __init__(self, config=None) -> None:
        self.config = config

    def party_keygen(self, pid):
        return b"secret-" + pid.encode(), b"pk-" + pid.encode()

    def party_keygen_finish(self, pid, secret, roster):
        return secret + b"+2", b"dealt-by-" + pid.encode() + b":" + b",".join(sorted(roster.values()))

    def assemble(self, roster, finish):
        assert set(finish) == set(roster)
        return b"server", {pid: finish[pid] for pid in roster}

    def party_material(self, pid, secret, public):
        if not public.startswith(b"dealt-by-" + pid.encode()):
            raise ConfigError("not mine")
        return secret, public

    def dump_material(self, material):
        return material

    def load_material(self, data):
        return data


def test_two_phase_keygen_runs_phase_two_before_assembling(tmp_path) -> None:
    from securefed.deploy.keygen import keygen_finish
    from securefed.protocols import registry

    if "test-two-phase" not in registry.names():
        registry.register("test-two-phase", _TwoPhase)
    local = provision_federation(tmp_path / "local", PARTIES, "h", "test-two-phase")
    secret, public = load_party_kit(local.party_dirs["bob"]).protocol_and_material()[1]
    assert secret == b"secret-bob+2" and public == b"dealt-by-bob:pk-alice,pk-bob,pk-carol"
    # Across machines: the operator publishes the roster, parties finish, then provisioning goes on.
    machines = {pid: tmp_path / "m" / pid for pid in PARTIES}
    requests = {pid: keygen_party(machines[pid], pid, "test-two-phase") for pid in PARTIES}
    with pytest.raises(ConfigError, match="second keygen phase"):
        provision_federation(tmp_path / "op", PARTIES, "h", "test-two-phase", requests=requests)
    for pid in PARTIES:
        keygen_finish(machines[pid], tmp_path / "op" / "roster.json", "test-two-phase")
    fed = provision_federation(tmp_path / "op", PARTIES, "h", "test-two-phase", requests=requests)
    shutil.copy(fed.party_dirs["carol"] / PARTY_PUBLIC, machines["carol"] / PARTY_PUBLIC)
    for f in ("ca.pem", "party.pem", "federation.json"):
        shutil.copy(fed.party_dirs["carol"] / f, machines["carol"] / f)
    assert load_party_kit(machines["carol"]).protocol_and_material()[1][0] == b"secret-carol+2"
