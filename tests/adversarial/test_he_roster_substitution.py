"""Threshold `he`: the operator substitutes one roster member's key material in what one party sees.

Alice's kit lists the honest fingerprints (so pins pass), but the phase-1 roster the operator hands
her for `keygen --finish` carries an operator-made key in bob's place. Alice then deals bob's Shamir
share of her key to the operator, and her assembled material (party-public.bin) is consistent with
that roster. With t - 1 colluding parties the operator holds t shares of alice's key and reads her
upload. The weakened variant is the kit load without he's material check (no `public_roster`); the
real kit load compares every member's phase-1 key in the material with federation.json's
fingerprints and refuses in one line, before any round.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

from _deploy_helpers import fast_settings
from securefed.deploy.keygen import (
    REQUEST,
    SECRET,
    _load,
    keygen_finish,
    keygen_party,
    protocol_of,
    read_request,
    write_party_public,
)
from securefed.deploy.kit import load_party_kit
from securefed.deploy.provision import KeygenPhasePending, provision_federation
from securefed.errors import ConfigError
from securefed.protocols.base import Message, PartyInput, RoundContext
from securefed.protocols.he import HE, framing, rlwe
from securefed.protocols.he.threshold import keys as tkeys
from securefed.protocols.he.threshold import layout as tl
from securefed.protocols.he.threshold import scheme
from securefed.protocols.he.threshold.party import INPUT_STAGE

PARTIES = ("alice", "bob", "carol", "dave", "erin")  # t = 3: the operator + carol + dave is below t
M = 64


def _provision(root, requests):
    return provision_federation(root, PARTIES, "127.0.0.1", "he", None, fast_settings(), requests=requests)


def _upload(material, nonce: bytes, inp: PartyInput):
    """Alice's real party session: the nonce message of round 0 and her encrypted upload c0."""
    he = HE()
    ctx = RoundContext("fed-sub", 0, PARTIES, M, False, 16)
    party = he.party(ctx, "alice", inp, material)
    head = framing.header(tl.KIND_TINPUT, material.public.key_id, 0)
    lay = tl.TLayout.for_round(ctx, he.config, material.public)
    r = framing.Reader(party.handle(Message(INPUT_STAGE, head + nonce)).payload, tl.KIND_UPLOAD,
                       material.public.key_id, 0)
    seed = scheme.round_seed(material.public.key_id, "fed-sub", 0, 0, nonce)
    return lay, seed, lay.unpack(r.take(lay.elems_bytes))


def test_substituted_he_member_material_is_refused_at_kit_load(tmp_path, monkeypatch) -> None:
    machines = {pid: tmp_path / "m" / pid for pid in PARTIES}
    requests = {pid: keygen_party(machines[pid], pid, "he") for pid in PARTIES}
    fake_dir = tmp_path / "operator" / "bob"
    keygen_party(fake_dir, "bob", "he")  # the operator's own key for bob

    with pytest.raises(KeygenPhasePending):  # pass 1: the honest roster of phase-1 keys
        _provision(tmp_path / "fed", requests)
    honest_roster = tmp_path / "fed" / "roster.json"
    # What alice is given instead: bob's phase-1 bytes swapped for the operator's, nothing else.
    doctored = json.loads(honest_roster.read_text())
    fake_public = read_request(fake_dir / REQUEST, "bob", "he").public
    doctored["roster"]["bob"] = fake_public.hex()
    alice_roster = tmp_path / "alice-roster.json"
    alice_roster.write_text(json.dumps(doctored, sort_keys=True) + "\n")

    keygen_finish(machines["alice"], alice_roster, "he")
    for pid in PARTIES[1:]:
        keygen_finish(machines[pid], honest_roster, "he")
    fed = _provision(tmp_path / "fed", requests)  # pass 2: the kits, honest fingerprints
    # The operator's "bob" deals its phase 2 against alice's view (the protocol hook, run by hand).
    _, kg = protocol_of("he", None)
    fake_secret = bytes.fromhex(_load(fake_dir / SECRET, "secret", "he")["secret"])
    _, fake_public2 = kg.party_keygen_finish("bob", fake_secret, {p: bytes.fromhex(v) for p, v in doctored["roster"].items()})

    # Alice's kit: the honest federation.json, and the material assembled from her view.
    reqs = {pid: read_request(requests[pid], pid, "he") for pid in PARTIES}
    reqs["bob"] = dataclasses.replace(read_request(fake_dir / REQUEST, "bob", "he"), public2=fake_public2)
    _, bundles = kg.assemble({p: r.public for p, r in reqs.items()}, {p: r.public2 for p, r in reqs.items()})
    victim = machines["alice"]
    for f in fed.party_dirs["alice"].iterdir():
        shutil.copy(f, victim / f.name)
    write_party_public(victim, "he", "alice", bundles["alice"])

    # Weakened: the kit load without he's material check. Alice runs a round.
    monkeypatch.delattr(HE, "public_roster", raising=False)
    _, alice_mat = load_party_kit(victim).protocol_and_material()
    rng = np.random.default_rng(3)
    inp = PartyInput((rng.standard_normal(M) * 0.2).astype(np.float32), None, 5.0)
    lay, seed, c0 = _upload(alice_mat, b"\x05" * tl.NONCE_LEN, inp)

    # The operator opens alice's share dealt to "bob" (its own X25519 key); carol and dave collude.
    ring, pub = lay.ring, alice_mat.public
    fake = tkeys.secret_from_bytes(fake_secret, "bob")
    alice_p1 = tkeys.Phase1.parse(reqs["alice"].public)
    enc = tkeys.Phase2.parse(reqs["alice"].public2).shares["bob"]
    aead = tkeys._share_key(fake.dh_key, alice_p1.dh_pub, pub.label, "alice", "bob")
    shares = {"bob": tkeys.elem_from(ring, aead.decrypt(enc[:12], enc[12:], tkeys._share_aad(pub.label, "alice", "bob")),
                                     "share")}
    for pid in ("carol", "dave"):
        shares[pid] = load_party_kit(_kit_of(machines[pid], fed, pid)).protocol_and_material()[1].shares["alice"]
    xs = tuple(pub.point(p) for p in shares)
    s_alice = np.zeros_like(alice_mat.s_ntt)
    for p, sh in shares.items():
        s_alice = ring.add(s_alice, ring.scalar_mul(sh, rlwe.lagrange_at_zero(ring, pub.point(p), xs)))
    assert np.array_equal(s_alice, alice_mat.s_ntt)  # t shares: alice's key
    x = ring.sub(c0, ring.intt(ring.mul(scheme.crs(ring, seed, 0), s_alice))[None])
    digits = rlwe.decode_message(ring, x, lay.codec.bits, lay.k, lay.budget.delta_bits, 0, strict=False)
    assert np.max(np.abs(digits[:M] - inp.delta.astype(np.float64) * inp.weight / lay.codec.step)) <= 1.0

    # Real: the material's phase-1 key for bob is not the one federation.json lists: refused.
    monkeypatch.undo()
    with pytest.raises(ConfigError, match="protocol key of 'bob'") as e:
        load_party_kit(victim).protocol_and_material()
    assert "\n" not in str(e.value)
    # The honest members load their own kits (the check passes on a consistent roster).
    load_party_kit(machines["carol"]).protocol_and_material()


def _kit_of(machine, fed, pid):
    for f in fed.party_dirs[pid].iterdir():
        shutil.copy(f, machine / f.name)
    return machine
