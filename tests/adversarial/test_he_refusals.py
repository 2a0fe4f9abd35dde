"""Threshold `he`: what an honest party refuses, each attack driving real party sessions against a
server that deviates arbitrarily (with colluding parties d and e, t - 1 = 2 of them). The request
the attacker would need is first shown to be accepted in its honest form (the refusal is not a
broken party), then refused in its malicious form.

- a contributor set not signed by a quorum; two contributor sets in one round (split views);
- fewer than max(min_contributors, t) contributors; a decryptor set with < t members, non-signers,
  or without the party; more answers than the round allows;
- a request replayed from another round; a second upload under one a_tau;
- a forged or rogue key share at key generation.
"""

from __future__ import annotations

import numpy as np
import pytest

from _he_harness import IDS, Session, federation, refuses
from securefed.protocols.base import Message, ProtocolError
from securefed.protocols.he import HE, HEConfig, rlwe
from securefed.protocols.he.threshold import keys as tkeys
from securefed.protocols.he.threshold import layout as tl
from securefed.protocols.he.threshold import scheme
from securefed.protocols.he.threshold.party import DECRYPT_STAGE, INPUT_STAGE


@pytest.fixture(scope="module")
def fed():
    return federation()


def _uploaded(fed, round_: int, **kw) -> Session:
    s = Session(fed, round_, **kw)
    for p in s.parties:
        s.upload(p)
    return s


def test_a_contributor_set_needs_a_quorum_of_signatures(fed):
    s = _uploaded(fed, 1)
    ids = ("a", "b", "c")
    sigs = {p: s.sign(p, ids) for p in ("a", "b")} | {p: s.forged_sign(p, ids) for p in ("d", "e")}
    assert tl.quorum(5, 3) == 4
    three = {p: sigs[p] for p in ("a", "d", "e")}  # one honest signer and both colluders: 3 < 4
    assert refuses(s.parties["a"], s.decrypt_msg(ids, three, ("a", "d", "e")))
    bad = dict(sigs, b=sigs["a"])  # b's signature replaced
    assert refuses(s.parties["a"], s.decrypt_msg(ids, bad, ("a", "b", "d")))
    assert s.answer("a", s.decrypt_msg(ids, sigs, ("a", "b", "d"))).shape[0] == s.lay.n_ct  # 4 good ones


def test_split_views_one_contributor_set_per_round(fed):
    """The server shows a and b the set C, c the set C' (both without e's upload, say): any two
    quorums share an honest signer, and an honest party signs one set per round."""
    s = _uploaded(fed, 2)
    c1, c2 = ("a", "b", "c", "d"), ("a", "b", "c", "e")
    sig1 = {p: s.sign(p, c1) for p in ("a", "b")} | {p: s.forged_sign(p, c1) for p in ("d", "e")}
    with pytest.raises(ProtocolError):
        s.sign("a", c2)  # a already signed C this round
    sig2 = {"c": s.sign("c", c2)} | {p: s.forged_sign(p, c2) for p in ("d", "e")}
    assert len(sig2) < tl.quorum(5, 3)  # C' cannot reach a quorum without a or b
    assert refuses(s.parties["c"], s.decrypt_msg(c2, sig2, ("c", "d", "e")))
    # c never answers for C either: it did not sign C
    assert refuses(s.parties["c"], s.decrypt_msg(c1, sig1, ("a", "c", "d")))
    # and a second attempt of the round cannot bring C' back
    s2 = _uploaded(fed, 2, attempt=1, nonce=b"\x08" * tl.NONCE_LEN)
    with pytest.raises(ProtocolError):
        s2.sign("b", c2)
    assert s2.sign("b", c1)  # the same C again: allowed


def test_too_few_contributors_or_decryptors(fed):
    he, public, mats = fed
    s = _uploaded((HE(HEConfig(min_contributors=4)), public, mats), 3)
    with pytest.raises(ProtocolError):
        s.sign("a", ("a", "b", "c"))  # 3 < max(min_contributors=4, t=3)
    s2 = _uploaded(fed, 4)
    with pytest.raises(ProtocolError):
        s2.sign("a", ("a", "b"))  # 2 < t
    ids = ("a", "b", "c")
    sigs = {p: s2.sign(p, ids) for p in ("a", "b", "c")} | {"d": s2.forged_sign("d", ids)}
    assert refuses(s2.parties["a"], s2.decrypt_msg(ids, sigs, ("a", "b")))  # |D| < t
    assert refuses(s2.parties["a"], s2.decrypt_msg(ids, sigs, ("a", "b", "e")))  # e did not sign
    assert refuses(s2.parties["a"], s2.decrypt_msg(ids, sigs, ("b", "c", "d")))  # a not in D
    assert s2.answer("a", s2.decrypt_msg(ids, sigs, ("a", "b", "c"))).shape[0] == s2.lay.n_ct


def test_answers_per_round_are_bounded(fed):
    s = _uploaded(fed, 5)
    sigs = {p: s.sign(p, IDS) for p in IDS}
    msg = s.decrypt_msg(IDS, sigs, ("a", "b", "c"))
    for _ in range(scheme.answers_per_round(len(IDS))):
        s.answer("a", msg)  # re-answering the same signed set: allowed, up to the bound
    assert refuses(s.parties["a"], msg)


def test_replayed_request_and_second_upload_under_one_a_tau(fed):
    old = _uploaded(fed, 6)
    sigs = {p: old.sign(p, IDS) for p in IDS}
    msg = old.decrypt_msg(IDS, sigs, ("a", "b", "c"))
    new = _uploaded(fed, 7, seed=1)
    assert refuses(new.parties["a"], msg)  # the old header
    relabel = Message(DECRYPT_STAGE, new.head(tl.KIND_TDECRYPT) + msg.payload[len(new.head(tl.KIND_TDECRYPT)) :])
    assert refuses(new.parties["a"], relabel)  # the signatures bind round 6 (and a signed nothing yet)
    # a new session of round 7, attempt 0, the same nonce: the same a_tau; the ledger refuses
    again = Session(fed, 7, seed=2)
    assert refuses(again.parties["a"], Message(INPUT_STAGE, again.head(tl.KIND_TINPUT) + again.nonce))
    fresh = Session(fed, 7, seed=2, nonce=b"\x09" * tl.NONCE_LEN)  # a fresh nonce names a fresh a_tau
    assert fresh.upload("a").shape[0] == fresh.lay.n_ct


# -- key generation ------------------------------------------------------------------------------


def _keygen(ids=("a", "b", "c")):
    label = "fed-attack"
    p1 = {p: tkeys.party_keygen(label, p) for p in ids}
    roster = {p: pub for p, (_, pub) in p1.items()}
    p2 = {p: tkeys.party_keygen_finish(sec, roster) for p, (sec, _) in p1.items()}
    return label, p1, roster, p2


def test_forged_key_share_is_refused():
    label, p1, roster, p2 = _keygen()
    public, bundles = tkeys.assemble(roster, {p: pub for p, (_, pub) in p2.items()})
    # The operator swaps c's key share (and its signature) for one it made itself.
    ring = rlwe.ring_for()
    _, rogue_b = rlwe.keygen_share(ring, rlwe.crs(ring, label.encode()), np.random.default_rng(9).bytes)
    head, blobs = tkeys._unpack(bundles["a"], "bundle")
    i = 3 + 3 * 2  # after the 3 roster entries: (b, sig, share) per party; c is the third
    blobs[i] = tkeys.elem_bytes(rogue_b)
    with pytest.raises(tkeys.KeygenError, match="commitment"):
        tkeys.party_material(p2["a"][0], tkeys._pack(head, blobs))
    # ... and with a re-signed phase 1 of its own for c (a replaced identity): a's roster differs
    fake_sec, fake_pub = tkeys.party_keygen(label, "c")
    blobs[2] = fake_pub
    with pytest.raises(tkeys.KeygenError, match="roster differs"):
        tkeys.party_material(p2["a"][0], tkeys._pack(head, blobs))


def test_rogue_key_after_seeing_the_others_is_refused():
    """c publishes b_c = -a s' + e' - b_a - b_b (so that it alone knows the collective key) in
    phase 2; it committed to its honest b_c in phase 1, before anyone revealed."""
    label, p1, roster, p2 = _keygen()
    ring = rlwe.ring_for()
    a = rlwe.crs(ring, label.encode())
    s_rogue, b_rogue = rlwe.keygen_share(ring, a, np.random.default_rng(3).bytes)
    b_rogue = ring.sub(ring.sub(b_rogue, p1["a"][0].b_ntt), p1["b"][0].b_ntt)
    head, blobs = tkeys._unpack(p2["c"][1], "p2")
    blobs[0] = tkeys.elem_bytes(b_rogue)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    blobs[1] = Ed25519PrivateKey.from_private_bytes(p1["c"][0].sign_key).sign(tkeys._pk_msg(label, "c", blobs[0]))
    finish = {p: pub for p, (_, pub) in p2.items()} | {"c": tkeys._pack(head, blobs)}
    with pytest.raises(tkeys.KeygenError, match="commitment"):
        tkeys.assemble(roster, finish)
