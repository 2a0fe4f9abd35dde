"""Roster grinding: a colluding party that hands in its keys last tries fresh keys (cheap: a TLS and an
Ed25519 key a try) until the derived selection puts the target in a round with colluders only.

Toy sizes: 8 parties, 3 invited a round, so a chosen round-0 set has chance 1/56 a roster and a few
hundred tries find one. Weakened variant: the seed of the key digests alone (the rule before
commit-then-reveal; a federation.json without reveals): the grinder, who sees the honest requests,
lands the chosen set, and the target's update is the round's sum minus the colluders' inputs. Real:
the seed also mixes every party's contribution, revealed only after roster.json fixed every key and
commitment; the grinder's prediction misses, and each way it could still steer (another reveal,
another key after the reveals, a roster without reveals) is refused by the parties' kit load.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

from _deploy_helpers import HOST, fast_settings
from _harness import context, make_inputs
from securefed.deploy.keygen import keygen_finish, keygen_party, read_request
from securefed.deploy.kit import load_party_kit
from securefed.deploy.provision import KeygenPhasePending, provision_federation
from securefed.deploy.roster import entry_digests, membership_of, spki_of_csr
from securefed.errors import ConfigError
from securefed.membership import Membership, seed_commitment
from securefed.protocols.driver import run_round
from securefed.protocols.secagg import SecAgg
from securefed.protocols.secagg.provisioning import ServerMaterial

PARTIES = tuple(f"p{i}" for i in range(8))
TARGET, GRINDER, COLLUDER = "p0", "p7", "p6"
CHOSEN = (TARGET, COLLUDER, GRINDER)  # round 0: the target alone with two colluders


def _settings():
    return fast_settings(app={"vector_len": 8, "seed": 7, "sampling": {"count": 3}})


def _digest(request, pid: str) -> str:
    r = read_request(request, pid, "secagg")
    return entry_digests(spki_of_csr(r.csr_pem), "secagg", r.public)[0]


def _install(fed, pid, machine):
    for f in fed.party_dirs[pid].iterdir():
        shutil.copy(f, machine / f.name)
    return machine


def test_a_last_mover_grinding_its_key_steers_the_weakened_seed_and_not_the_committed_one(tmp_path) -> None:
    machines = {pid: tmp_path / "m" / pid for pid in PARTIES}
    requests = {pid: keygen_party(machines[pid], pid, "secagg") for pid in PARTIES if pid != GRINDER}
    seen = {pid: _digest(requests[pid], pid) for pid in requests}  # what the colluding operator shows the grinder

    # The grinder's search, as cheap as it claims: key pairs until round 0 is CHOSEN.
    found = None
    for attempt in range(1500):
        req = keygen_party(tmp_path / "grind" / str(attempt) / GRINDER, GRINDER, "secagg")
        keys = {**seen, GRINDER: _digest(req, GRINDER)}
        if Membership.from_roster(keys, 3, None, 3).invited(0) == CHOSEN:
            found = req
            break
    assert found is not None, "1500 tries at 1/56 each"
    requests[GRINDER] = found
    machines[GRINDER] = found.parent
    settings = _settings()
    with pytest.raises(KeygenPhasePending):
        provision_federation(tmp_path / "fed", PARTIES, HOST, "secagg", None, settings, requests=requests)
    roster = tmp_path / "published-roster.json"  # what every party is given (provisioning removes its copy)
    shutil.copy(tmp_path / "fed" / "roster.json", roster)
    snapshot = {pid: tmp_path / "before-reveal" / pid for pid in PARTIES}
    for pid in PARTIES:
        shutil.copytree(machines[pid], snapshot[pid])
        keygen_finish(machines[pid], roster, "secagg")
    fed = provision_federation(tmp_path / "fed", PARTIES, HOST, "secagg", None, settings, requests=requests)
    kits = {pid: _install(fed, pid, machines[pid]) for pid in PARTIES}

    # Weakened: the same roster without the reveals (the seed of the key digests alone). The grinder's
    # choice holds: round 0 invites the target with the two colluders, and they read its update.
    weak = dataclasses.replace(fed.config, parties=tuple(dataclasses.replace(p, seed_commit="", seed_reveal="")
                                                         for p in fed.config.parties))
    assert membership_of(weak).invited(0) == CHOSEN
    mats = {pid: load_party_kit(kits[pid]).protocol_and_material()[1] for pid in CHOSEN}
    ctx = membership_of(weak).check(context(CHOSEN, 8, round_=0))  # the target's own check passes
    inputs = make_inputs(CHOSEN, 8, 5)
    vsum, _ = run_round(SecAgg(), ctx, inputs, ServerMaterial(mats[TARGET].identity_keys), mats)
    leaked = vsum.delta_sum - sum(inputs[p].delta * inputs[p].weight for p in (COLLUDER, GRINDER))
    assert np.allclose(leaked, inputs[TARGET].delta * inputs[TARGET].weight, atol=1e-2)
    # ... and the target refuses that weakened roster: it committed, so it wants the reveals.
    (kits[TARGET] / "federation.json").write_text(weak.to_json())
    with pytest.raises(ConfigError, match="does not match its commitment|not the roster this party revealed"):
        load_party_kit(kits[TARGET]).protocol_and_material()
    shutil.copy(fed.party_dirs[TARGET] / "federation.json", kits[TARGET] / "federation.json")

    # Real: the seed mixes reveals drawn after the roster was fixed. The grinder's evaluation of its
    # key (the digests, or the digests with any guess of the honest reveals) is not the seed.
    real = membership_of(load_party_kit(kits[TARGET]).federation)
    load_party_kit(kits[TARGET]).protocol_and_material()  # the honest kit loads
    assert real.seed != membership_of(weak).seed
    guess = {p.id: (p.seed_reveal if p.id in (COLLUDER, GRINDER) else "00" * 32) for p in fed.config.parties}
    assert real.seed != Membership.from_roster({p.id: p.key_sha256 for p in fed.config.parties}, 3, None, 3,
                                               guess).seed
    # Every honest reveal moves the seed: none was known when the grinder's key was fixed.
    for pid in PARTIES[:6]:
        moved = dataclasses.replace(fed.config, parties=tuple(dataclasses.replace(p, seed_reveal="11" * 32)
                                                              if p.id == pid else p for p in fed.config.parties))
        assert membership_of(moved).seed != real.seed

    # What the grinder can still do after seeing the reveals, and what the target says to each.
    # (a) reveal another contribution: refused.
    other = _with_entry(fed, GRINDER, seed_reveal="22" * 32)
    _refused(kits[TARGET], other, "reveals for 'p7' does not match its commitment")
    # (b) a fresh key with a fresh commitment and its reveal, after everyone revealed: refused.
    late = keygen_party(tmp_path / "late" / GRINDER, GRINDER, "secagg")
    r = read_request(late, GRINDER, "secagg")
    contribution = json.loads((late.parent / "seed-contribution.json").read_text())["contribution"]
    swapped = _with_entry(fed, GRINDER, key_sha256=entry_digests(spki_of_csr(r.csr_pem), "secagg", r.public)[0],
                          seed_commit=r.seed_commit, seed_reveal=contribution)
    assert seed_commitment(GRINDER, contribution) == r.seed_commit  # a consistent entry, only late
    _refused(kits[TARGET], swapped, "not the roster this party revealed")
    # (c) withhold its reveal and come back with another key: provisioning stops (a re-run, visible),
    # and no honest party reveals its contribution again against the new roster: that needs new keys,
    # so each abort buys the grinder one fresh, unpredictable draw, not a search.
    withheld = tmp_path / "withheld" / "request"
    shutil.copytree(found, withheld)
    (withheld / "seed-reveal.json").unlink()
    with pytest.raises(KeygenPhasePending, match="still no second phase from p7"):
        provision_federation(tmp_path / "fed2", PARTIES, HOST, "secagg", None, _settings(),
                             requests={**requests, GRINDER: withheld})
    with pytest.raises(KeygenPhasePending):
        provision_federation(tmp_path / "fed3", PARTIES, HOST, "secagg", None, _settings(),
                             requests={**requests, GRINDER: late})
    with pytest.raises(ConfigError, match="already revealed its seed contribution against another roster"):
        keygen_finish(machines[TARGET], tmp_path / "fed3" / "roster.json", "secagg")
    # The operator cannot reveal for a party either: a roster.json with the target's entry changed
    # is refused before anything is revealed.
    doctored = json.loads(roster.read_text())
    doctored["members"][TARGET]["seed_commit"] = "33" * 32
    (tmp_path / "doctored.json").write_text(json.dumps(doctored))
    with pytest.raises(ConfigError, match="not this party's keys and seed commitment"):
        keygen_finish(snapshot[TARGET], tmp_path / "doctored.json", "secagg")


def _with_entry(fed, pid, **change):
    return dataclasses.replace(fed.config, parties=tuple(dataclasses.replace(p, **change) if p.id == pid else p
                                                         for p in fed.config.parties))


def _refused(kit, fed_config, match: str) -> None:
    original = (kit / "federation.json").read_text()
    (kit / "federation.json").write_text(fed_config.to_json())
    try:
        with pytest.raises(ConfigError, match=match) as e:
            load_party_kit(kit).protocol_and_material()
        assert "\n" not in str(e.value)
    finally:
        (kit / "federation.json").write_text(original)
