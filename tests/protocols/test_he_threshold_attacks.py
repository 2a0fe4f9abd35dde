"""Attacks on threshold `he` by a server that deviates arbitrarily (with colluding parties), each
driving real party sessions. Every attack is first shown to pay off if the party answered (an
omniscient helper computes what the answers would decrypt), then the party must refuse.

- a single party's ciphertext presented as a sum;
- a sum that omits the decrypting party (or lists it without its upload);
- a sum (and its attestations) reused from another round;
- fewer than min_contributors inputs;
- a second decryption in one round; a recovery request with a forged decryption set;
- a forged or rogue key share at key generation;
- fewer than t colluding parties with the server decrypt an upload: output independent of input.
"""

from __future__ import annotations

import numpy as np
import pytest

from securefed.protocols.base import Message, PartyInput, ProtocolError, RoundContext
from securefed.protocols.he import HE, HEConfig, framing, rlwe
from securefed.protocols.he.threshold import keys as tkeys
from securefed.protocols.he.threshold import layout as tr
from securefed.protocols.he.threshold.party import ATTEST_STAGE, DECRYPT_STAGE, INPUT_STAGE, RECOVER_STAGE

IDS = ("a", "b", "c", "d", "e")
M = 600


@pytest.fixture(scope="module")
def fed():
    he = HE(HEConfig(threshold_fraction=0.5))  # t = 3 of 5
    public, parties = he.provision(IDS)
    return he, public, parties


class Round:
    """One round's real party sessions, driven by a malicious server (this test)."""

    def __init__(self, fed, round_: int, selected=IDS, seed: int = 0, inputs=None):
        self.he, self.public, self.mats = fed
        self.ctx = RoundContext("fed", round_, selected, M, False, 16)
        rng = np.random.default_rng(seed)
        self.inputs = inputs or {p: PartyInput((rng.standard_normal(M) * 0.2).astype(np.float32), None,
                                               float(rng.integers(1, 17))) for p in selected}
        self.parties = {p: self.he.party(self.ctx, p, self.inputs[p], self.mats[p]) for p in selected}
        self.lay = tr.TLayout.for_round(self.ctx, self.he.config, self.public)
        self.c0, self.c1 = {}, {}
        for p, party in self.parties.items():
            r = framing.Reader(party.handle(Message(INPUT_STAGE, b"")).payload, tr.KIND_TINPUT,
                               self.public.key_id, round_)
            self.c0[p], self.c1[p] = self.lay.unpack(r.take(self.lay.elems_bytes)), self.lay.unpack(r.take(self.lay.elems_bytes))

    def head(self, kind: int, round_: int | None = None) -> bytes:
        return framing.header(kind, self.public.key_id, self.ctx.round if round_ is None else round_)

    def attest(self, pid: str, ids: tuple[str, ...], packed_c1: bytes) -> bytes:
        body = self.head(tr.KIND_ATTEST) + framing.encode_ids(ids) + tr.sum_hash(packed_c1)
        reply = self.parties[pid].handle(Message(ATTEST_STAGE, body)).payload
        return reply[len(self.head(tr.KIND_ATTESTED)) :]

    def decrypt_request(self, ids: tuple[str, ...], c1_sum: np.ndarray, attestations: dict[str, bytes]) -> Message:
        packed = self.lay.pack(c1_sum)
        return Message(DECRYPT_STAGE, self.head(tr.KIND_TDECRYPT) + framing.encode_ids(ids) + packed
                       + b"".join(attestations[p] for p in ids))

    def sum_c1(self, ids) -> np.ndarray:
        out = np.zeros_like(self.c1[ids[0]])
        for p in ids:
            out = self.lay.ring.add(out, self.c1[p])
        return out

    def omniscient_decrypt(self, c0: np.ndarray, c1: np.ndarray) -> np.ndarray:
        """What t honest answers to (c0, c1) would give the server: the plaintext's value sums."""
        ring, x = self.lay.ring, c0
        for m in self.mats.values():
            x = ring.add(x, rlwe.partial_decrypt(ring, c1, m.s_ntt, self.lay.budget.flood_bits, np.random.default_rng(0).bytes))
        return rlwe.decode_message(ring, x, self.lay.codec.bits, self.lay.k, self.lay.budget.delta_bits, self.lay.noise_bound)

    def quantized(self, pid: str) -> np.ndarray:
        """The target's own integers (stochastic rounding aside: within one unit)."""
        d = self.inputs[pid]
        return d.delta.astype(np.float64) * d.weight / self.lay.codec.step


def refuses(party, message: Message) -> bool:
    try:
        party.handle(message)
    except ProtocolError:
        return True
    return False


def test_single_upload_presented_as_a_sum(fed):
    r = Round(fed, 1)
    # Payoff if answered: decrypting c1 of "a" alone with c0 of "a" yields a's update.
    leaked = r.omniscient_decrypt(r.c0["a"], r.c1["a"])
    assert np.max(np.abs(leaked[:M] - r.quantized("a"))) <= 1.0
    # The attack: "the sum of a and b" is a's upload; a and b attest to it as asked.
    fake = r.lay.pack(r.c1["a"])
    att = {p: r.attest(p, ("a", "b"), fake) for p in ("a", "b")}
    assert refuses(r.parties["b"], r.decrypt_request(("a", "b"), r.c1["a"], att))
    assert refuses(r.parties["a"], r.decrypt_request(("a", "b"), r.c1["a"], att))


def test_sum_omitting_the_decryptor(fed):
    r = Round(fed, 2)
    ids = ("a", "b")
    c1 = r.sum_c1(ids)
    att = {p: r.attest(p, ids, r.lay.pack(c1)) for p in ids}
    # c is asked to decrypt a+b (a correct, attested sum), without its own upload in it
    assert refuses(r.parties["c"], r.decrypt_request(ids, c1, att))
    # ... or listed as a contributor while its upload is left out of the sum
    ids3 = ("a", "b", "c")
    att3 = {p: r.attest(p, ids3, r.lay.pack(c1)) for p in ids3}
    assert refuses(r.parties["c"], r.decrypt_request(ids3, c1, att3))


def test_sum_reused_from_another_round(fed):
    old = Round(fed, 3, seed=1)
    ids = ("a", "b", "c")
    c1 = old.sum_c1(ids)
    att = {p: old.attest(p, ids, old.lay.pack(c1)) for p in ids}
    msg = old.decrypt_request(ids, c1, att)
    new = Round(fed, 4, seed=2)
    assert refuses(new.parties["a"], msg)  # the old header
    relabelled = Message(DECRYPT_STAGE, new.head(tr.KIND_TDECRYPT) + msg.payload[len(new.head(tr.KIND_TDECRYPT)) :])
    assert refuses(new.parties["a"], relabelled)  # the attestations bind round 3
    # the honest sum of this round is accepted: the refusals are not a broken party
    c1n = new.sum_c1(ids)
    attn = {p: new.attest(p, ids, new.lay.pack(c1n)) for p in ids}
    assert new.parties["a"].handle(new.decrypt_request(ids, c1n, attn)).stage == DECRYPT_STAGE


def test_fewer_than_min_contributors(fed):
    he, public, parties = fed
    r = Round((HE(HEConfig(min_contributors=3)), public, parties), 5)
    ids = ("a", "b")
    c1 = r.sum_c1(ids)
    with pytest.raises(ProtocolError):
        r.attest("a", ids, r.lay.pack(c1))  # refused already at attestation
    # and at decryption (the contributor check runs before any attestation is read)
    junk = {p: b"\0" * (r.lay.evals_bytes + tr.SIG_LEN) for p in ids}
    assert refuses(r.parties["a"], r.decrypt_request(ids, c1, junk))
    ids3 = ("a", "b", "c")  # the same parties accept a sum of three
    c13 = r.sum_c1(ids3)
    att = {p: r.attest(p, ids3, r.lay.pack(c13)) for p in ids3}
    assert r.parties["a"].handle(r.decrypt_request(ids3, c13, att)).stage == DECRYPT_STAGE


def test_one_decryption_per_round_and_checked_recovery(fed):
    r = Round(fed, 6)
    ids = ("a", "b", "c", "d")
    c1 = r.sum_c1(ids)
    att = {p: r.attest(p, ids, r.lay.pack(c1)) for p in ids}
    ok = r.decrypt_request(ids, c1, att)
    assert r.parties["a"].handle(ok).stage == DECRYPT_STAGE
    ids2 = ("a", "b", "c")
    c1b = r.sum_c1(ids2)
    att2 = {p: r.attest(p, ids2, r.lay.pack(c1b)) for p in ids2}
    assert refuses(r.parties["a"], r.decrypt_request(ids2, c1b, att2))  # a second sum, same round
    rec = lambda answered, missing: Message(RECOVER_STAGE, r.head(tr.KIND_RECOVER) + framing.encode_ids(answered)  # noqa: E731
                                            + framing.encode_ids(missing))
    assert refuses(r.parties["a"], rec(("a", "b"), ("c", "d", "e")))  # fewer than t answered
    assert refuses(r.parties["a"], rec(("a", "b", "c"), ("e",)))  # d neither answered nor missing
    assert refuses(r.parties["a"], rec(("a", "b", "e"), ("c", "d")))  # e is no contributor
    assert r.parties["a"].handle(rec(("a", "b", "c", "d"), ("e",))).stage == RECOVER_STAGE
    assert refuses(r.parties["a"], rec(("a", "b", "c", "d"), ("e",)))  # once per round


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


# -- collusion below the threshold ---------------------------------------------------------------


def _collusion_attempt(r: Round, colluders: tuple[str, ...], target: str) -> np.ndarray:
    """The server's best linear attempt with the colluders' keys: their own shares plus every
    other party's key share interpolated from the colluders' Shamir shares (t-1 points: the
    missing point taken as 0). Returns the raw digits (no noise check)."""
    ring, pub = r.lay.ring, r.public
    xs = tuple(pub.point(c) for c in colluders)
    guess = np.zeros_like(r.mats[colluders[0]].s_ntt)
    for j in pub.roster:
        if j in colluders:
            guess = ring.add(guess, r.mats[j].s_ntt)
            continue
        for c in colluders:
            guess = ring.add(guess, ring.scalar_mul(r.mats[c].shares[j], rlwe.lagrange_at_zero(ring, pub.point(c), xs)))
    x = ring.add(r.c0[target], ring.intt(ring.mul(r.c1[target], guess)))
    return rlwe.decode_message(ring, x, r.lay.codec.bits, r.lay.k, r.lay.budget.delta_bits, 0, strict=False)


def test_fewer_than_t_colluders_learn_nothing_of_an_upload(fed):
    he, public, parties = fed
    t = public.threshold
    zeros = {p: PartyInput(np.zeros(M, np.float32), None, 16.0) for p in IDS}
    big = {p: PartyInput(np.full(M, 0.9, np.float32), None, 16.0) for p in IDS}
    outs = {}
    for name, inputs in (("zeros", zeros), ("big", big)):
        r = Round(fed, 7, inputs=inputs)
        # sanity: with t colluders the same attempt recovers the upload exactly (the attack is real)
        full = _collusion_attempt(r, ("c", "d", "e")[:t], "a")
        assert np.max(np.abs(full[:M] - r.quantized("a"))) <= 1.0
        outs[name] = _collusion_attempt(r, ("d", "e")[: t - 1], "a")[:M].astype(np.float64)
    half = 2.0 ** (r.lay.codec.bits - 1)
    for name, got in outs.items():
        # uniform over the digit range whatever the input: mean ~ 0, spread ~ half / sqrt(3)
        assert abs(got.mean()) < 0.15 * half, name
        assert 0.45 * half < got.std() < 0.7 * half, name
    # and not distinguishable between the two inputs (target values 0 vs 0.9 * 16 / step)
    assert abs(outs["zeros"].mean() - outs["big"].mean()) < 0.2 * half
    assert abs(r.quantized("a")[0]) > 0.5 * half / 64  # the "big" input is not tiny
