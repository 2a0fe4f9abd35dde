"""Threshold key generation for `he` on the parties' machines (the keygen hooks of
protocols/keygen.py), and its in-process equivalent `provision`.

    phase 1  party_keygen(label, pid)           -> secret, public1 = {Ed25519 key, X25519 key,
                                                    H(b_i) commitment} signed by the party
    phase 2  party_keygen_finish(secret, roster) -> secret, public2 = {b_i = -a s_i + e_i signed,
                                                    Shamir shares of s_i, AES-GCM to each recipient}
    operator assemble(roster, finish)           -> server material (collective b, roster, t),
                                                    {pid: its public bundle}: public halves only
    party    party_material(secret, bundle)     -> checks every b_j against the commitment j
                                                    signed in phase 1, recomputes b, opens its shares

Why a commitment in phase 1: with b_j revealed first, a party (or the operator) publishing last
could pick b_rogue = -a s' + e' - sum_j b_j and own the collective key alone. Committing first
fixes every b_j before any is seen. The common polynomial a comes from the key label by SHAKE.

Shares travel encrypted under a static X25519 agreement between dealer and recipient (HKDF to an
AES-GCM key, the dealer/recipient/label as associated data): the operator relays them but cannot
read them; the GCM tag authenticates the dealer.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

import numpy as np
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from securefed.protocols.he import rlwe
from securefed.protocols.he.threshold.blobs import KeygenError, elem_bytes, elem_from
from securefed.protocols.he.threshold.blobs import pack as _pack
from securefed.protocols.he.threshold.blobs import unpack as _unpack
from securefed.protocols.he.ring import ByteSource

_RAW = (serialization.Encoding.Raw, serialization.PublicFormat.Raw)
_RAW_PRIV = (serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())


DEFAULT_LABEL = "securefed-he-v1"  # domain label of the keygen flow; also names the common polynomial a


def _sign_pub(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(*_RAW)


def _verify(pub: bytes, sig: bytes, msg: bytes, what: str) -> None:
    try:
        Ed25519PublicKey.from_public_bytes(pub).verify(sig, msg)
    except (InvalidSignature, ValueError):
        raise KeygenError(f"{what}: bad signature") from None


@dataclass(frozen=True)
class Phase1:
    party_id: str
    sign_pub: bytes  # Ed25519
    dh_pub: bytes  # X25519
    commit: bytes  # SHA-256 of b_i's bytes
    raw: bytes  # the signed bytes as published

    @classmethod
    def parse(cls, data: bytes) -> "Phase1":
        obj, blobs = _unpack(data, "keygen phase 1")
        if len(blobs) != 4 or not isinstance(obj.get("label"), str):
            raise KeygenError("keygen phase 1: malformed")
        sig_pub, dh_pub, commit, sig = blobs
        p1 = cls(str(obj.get("party_id")), sig_pub, dh_pub, commit, data)
        if len(sig_pub) != 32 or len(dh_pub) != 32 or len(commit) != 32:
            raise KeygenError(f"keygen phase 1 of {p1.party_id!r}: malformed keys")
        _verify(sig_pub, sig, _p1_msg(obj["label"], p1), f"keygen phase 1 of {p1.party_id!r}")
        return p1

    @staticmethod
    def label_of(data: bytes) -> str:
        return str(_unpack(data, "keygen phase 1")[0].get("label"))


def _p1_msg(label: str, p: Phase1) -> bytes:
    return b"|".join([b"securefed-he-keygen1-v1", label.encode(), p.party_id.encode(), p.sign_pub, p.dh_pub, p.commit])


def _pk_msg(label: str, pid: str, b: bytes) -> bytes:
    return b"|".join([b"securefed-he-pkshare-v1", label.encode(), pid.encode(), hashlib.sha256(b).digest()])


@dataclass(frozen=True)
class KeygenSecret:
    """A party's private keygen state (never leaves its machine)."""

    label: str
    party_id: str
    threshold_fraction: float
    sign_key: bytes = field(repr=False)
    dh_key: bytes = field(repr=False)
    s_ntt: np.ndarray = field(repr=False)
    b_ntt: np.ndarray = field(repr=False)
    own_share: np.ndarray | None = field(default=None, repr=False)  # after phase 2
    roster: tuple[bytes, ...] = ()  # the phase-1 bytes phase 2 was dealt against (sorted by pid)


def secret_to_bytes(s: KeygenSecret) -> bytes:
    """The keygen secret as bytes (the party keeps them 0600 on its machine)."""
    head = {"label": s.label, "party_id": s.party_id, "threshold_fraction": s.threshold_fraction,
            "own_share": s.own_share is not None, "roster": len(s.roster)}
    blobs = [s.sign_key, s.dh_key, elem_bytes(s.s_ntt), elem_bytes(s.b_ntt)]
    blobs += ([elem_bytes(s.own_share)] if s.own_share is not None else []) + list(s.roster)
    return b"SFHEKG1" + _pack(head, blobs)


def secret_from_bytes(data: bytes, party_id: str) -> KeygenSecret:
    ring = rlwe.ring_for()
    if not data.startswith(b"SFHEKG1"):
        raise KeygenError("he keygen secret: bad magic")
    head, blobs = _unpack(data[7:], "he keygen secret")
    try:
        n_share, n_roster = int(bool(head["own_share"])), int(head["roster"])
        if head["party_id"] != party_id or len(blobs) != 4 + n_share + n_roster:
            raise KeygenError("he keygen secret: another party's, or malformed")
        own = elem_from(ring, blobs[4], "he keygen secret") if n_share else None
        return KeygenSecret(str(head["label"]), party_id, float(head["threshold_fraction"]), blobs[0], blobs[1],
                            elem_from(ring, blobs[2], "he keygen secret"), elem_from(ring, blobs[3], "he keygen secret"),
                            own, tuple(blobs[4 + n_share :]))
    except (KeyError, TypeError, ValueError) as e:
        raise KeygenError(f"he keygen secret: malformed ({e})") from None


def threshold_for(n: int, fraction: float) -> int:
    """t = floor(fraction * n) + 1, at least 2 and at most n."""
    return max(2, min(n, int(fraction * n) + 1))


def party_keygen(label: str, party_id: str, threshold_fraction: float = 0.5,
                 rng: ByteSource = os.urandom) -> tuple[KeygenSecret, bytes]:
    ring = rlwe.ring_for()
    sign = Ed25519PrivateKey.from_private_bytes(rng(32))
    dh = X25519PrivateKey.from_private_bytes(rng(32))
    s, b = rlwe.keygen_share(ring, rlwe.crs(ring, label.encode()), rng)
    p1 = Phase1(party_id, _sign_pub(sign), dh.public_key().public_bytes(*_RAW),
                hashlib.sha256(elem_bytes(b)).digest(), b"")
    sig = sign.sign(_p1_msg(label, p1))
    public1 = _pack({"label": label, "party_id": party_id}, [p1.sign_pub, p1.dh_pub, p1.commit, sig])
    secret = KeygenSecret(label, party_id, threshold_fraction, sign.private_bytes(*_RAW_PRIV),
                          dh.private_bytes(*_RAW_PRIV), s, b)
    return secret, public1


def _roster(label: str, roster: dict[str, bytes]) -> dict[str, Phase1]:
    out = {}
    for pid in sorted(roster):
        if Phase1.label_of(roster[pid]) != label:
            raise KeygenError(f"keygen phase 1 of {pid!r}: another key label")
        p1 = Phase1.parse(roster[pid])
        if p1.party_id != pid:
            raise KeygenError(f"keygen phase 1 of {pid!r}: names party {p1.party_id!r}")
        out[pid] = p1
    if len(out) < 2:
        raise KeygenError("keygen roster: at least 2 parties are needed")
    return out


def _share_key(dh_priv: bytes, peer_pub: bytes, label: str, dealer: str, recipient: str) -> AESGCM:
    shared = X25519PrivateKey.from_private_bytes(dh_priv).exchange(X25519PublicKey.from_public_bytes(peer_pub))
    info = b"|".join([b"securefed-he-share-v1", label.encode(), dealer.encode(), recipient.encode()])
    return AESGCM(HKDF(hashes.SHA256(), 32, None, info).derive(shared))


def _pair_key(dh_priv: bytes, peer_pub: bytes, label: str, a: str, b: str) -> bytes:
    """The key two parties share for zero-sharing masks at decryption (the same on both sides)."""
    lo, hi = sorted((a, b))
    shared = X25519PrivateKey.from_private_bytes(dh_priv).exchange(X25519PublicKey.from_public_bytes(peer_pub))
    info = b"|".join([b"securefed-he-pair-v1", label.encode(), lo.encode(), hi.encode()])
    return HKDF(hashes.SHA256(), 32, None, info).derive(shared)


def _share_aad(label: str, dealer: str, recipient: str) -> bytes:
    return b"|".join([b"securefed-he-share-v1", label.encode(), dealer.encode(), recipient.encode()])


def party_keygen_finish(secret: KeygenSecret, roster: dict[str, bytes], rng: ByteSource = os.urandom
                        ) -> tuple[KeygenSecret, bytes]:
    """Deal Shamir shares of s_i (NTT form, t-of-n over each prime) to every roster party."""
    ring = rlwe.ring_for()
    ros = _roster(secret.label, roster)
    me = ros.get(secret.party_id)
    if (me is None or me.sign_pub != _sign_pub(Ed25519PrivateKey.from_private_bytes(secret.sign_key))
            or me.commit != hashlib.sha256(elem_bytes(secret.b_ntt)).digest()):
        raise KeygenError("keygen roster: our own phase-1 key is missing or replaced")
    ids = tuple(ros)
    t = threshold_for(len(ids), secret.threshold_fraction)
    shares = rlwe.shamir_deal(ring, secret.s_ntt, tuple(range(1, len(ids) + 1)), t, rng)
    sign = Ed25519PrivateKey.from_private_bytes(secret.sign_key)
    b = elem_bytes(secret.b_ntt)
    blobs, names = [b, sign.sign(_pk_msg(secret.label, secret.party_id, b))], []
    own = None
    for pid, share in zip(ids, shares):
        if pid == secret.party_id:
            own = share
            continue
        aead = _share_key(secret.dh_key, ros[pid].dh_pub, secret.label, secret.party_id, pid)
        nonce = rng(12)
        blobs.append(nonce + aead.encrypt(nonce, elem_bytes(share), _share_aad(secret.label, secret.party_id, pid)))
        names.append(pid)
    public2 = _pack({"label": secret.label, "party_id": secret.party_id, "t": t, "recipients": names}, blobs)
    done = KeygenSecret(secret.label, secret.party_id, secret.threshold_fraction, secret.sign_key,
                        secret.dh_key, secret.s_ntt, secret.b_ntt, own, tuple(roster[p] for p in ids))
    return done, public2


@dataclass(frozen=True)
class Phase2:
    party_id: str
    t: int
    b: bytes
    b_sig: bytes
    shares: dict[str, bytes]  # recipient -> nonce | AES-GCM ciphertext

    @classmethod
    def parse(cls, data: bytes) -> "Phase2":
        obj, blobs = _unpack(data, "keygen phase 2")
        names = obj.get("recipients")
        if not isinstance(names, list) or len(blobs) != 2 + len(names) or not isinstance(obj.get("t"), int):
            raise KeygenError("keygen phase 2: malformed")
        return cls(str(obj.get("party_id")), obj["t"], blobs[0], blobs[1], dict(zip(map(str, names), blobs[2:])))


def _check_phase2(label: str, ros: dict[str, Phase1], pid: str, p2: Phase2, t: int) -> None:
    if p2.party_id != pid or p2.t != t:
        raise KeygenError(f"keygen phase 2 of {pid!r}: wrong party or threshold")
    if hashlib.sha256(p2.b).digest() != ros[pid].commit:
        raise KeygenError(f"keygen phase 2 of {pid!r}: key share differs from its phase-1 commitment")
    _verify(ros[pid].sign_pub, p2.b_sig, _pk_msg(label, pid, p2.b), f"key share of {pid!r}")


@dataclass(frozen=True, eq=False)
class ThresholdPublic:
    """Public key material: what the server holds and every party checks."""

    label: str
    roster: tuple[str, ...]  # sorted party ids; party i's Shamir point is i + 1
    sign_pubs: tuple[bytes, ...]  # Ed25519, roster order
    threshold: int
    b_ntt: np.ndarray = field(repr=False)  # collective public key (L, N)
    key_id: bytes = b""  # SHA-256 prefix of everything above
    # Every party's signed phase-1 bytes (roster order): what its fingerprint covers. Its signing,
    # share-encryption and commitment to b_j, so binding these binds b and who holds shares.
    phase1: tuple[bytes, ...] = ()

    def point(self, pid: str) -> int:
        return self.roster.index(pid) + 1

    def sign_pub(self, pid: str) -> bytes:
        return self.sign_pubs[self.roster.index(pid)]

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, ThresholdPublic) and (self.label, self.roster, self.sign_pubs, self.threshold)
                == (other.label, other.roster, other.sign_pubs, other.threshold) and self.phase1 == other.phase1
                and np.array_equal(self.b_ntt, other.b_ntt))

    __hash__ = None  # type: ignore[assignment]


def public_key_id(label: str, roster: tuple[str, ...], sign_pubs: tuple[bytes, ...], t: int, b: np.ndarray) -> bytes:
    """16-byte id of the public key material; every message of a round carries it."""
    h = hashlib.sha256(b"securefed-he-key-v1|" + label.encode() + b"|" + str(t).encode())
    for pid, pub in zip(roster, sign_pubs):
        h.update(pid.encode() + b"|" + pub)
    h.update(elem_bytes(b))
    return h.digest()[:16]


def _public(label: str, ros: dict[str, Phase1], t: int, b: np.ndarray) -> ThresholdPublic:
    pubs = tuple(p.sign_pub for p in ros.values())
    return ThresholdPublic(label, tuple(ros), pubs, t, b, public_key_id(label, tuple(ros), pubs, t, b),
                           tuple(p.raw for p in ros.values()))


def check_phase1(public: ThresholdPublic) -> None:
    """Raises KeygenError unless `public.phase1` are the roster's signed phase-1 keys (material read
    from bytes: each parses, verifies under its own signing key, and names its party and key)."""
    if len(public.phase1) != len(public.roster):
        raise KeygenError("he threshold kit: phase-1 keys do not match the roster")
    for pid, pub, raw in zip(public.roster, public.sign_pubs, public.phase1):
        p1 = Phase1.parse(raw)
        if p1.party_id != pid or p1.sign_pub != pub or Phase1.label_of(raw) != public.label:
            raise KeygenError(f"he threshold kit: the phase-1 key of {pid!r} names another party or key")


def assemble(roster: dict[str, bytes], finish: dict[str, bytes]) -> tuple[ThresholdPublic, dict[str, bytes]]:
    """Operator side, public bytes only: check every signature, sum the key shares, and cut each
    party's bundle (the roster, every b_j with its signature, the shares dealt to it)."""
    ring = rlwe.ring_for()
    labels = {Phase1.label_of(v) for v in roster.values()}
    if len(labels) != 1:
        raise KeygenError("keygen roster: parties used different key labels")
    label = labels.pop()
    ros = _roster(label, roster)
    if set(finish) != set(ros):
        raise KeygenError("keygen: phase 2 is missing for some parties")
    p2s = {pid: Phase2.parse(finish[pid]) for pid in ros}
    t = p2s[next(iter(ros))].t
    if not 2 <= t <= len(ros):
        raise KeygenError(f"keygen: threshold {t} outside [2, {len(ros)}]")
    b = np.zeros((ring.size, ring.n), dtype=np.uint64)
    for pid, p2 in p2s.items():
        _check_phase2(label, ros, pid, p2, t)
        if set(p2.shares) != set(ros) - {pid}:
            raise KeygenError(f"keygen phase 2 of {pid!r}: shares do not cover the roster")
        b = ring.add(b, elem_from(ring, p2.b, f"key share of {pid!r}"))
    public = _public(label, ros, t, b)
    bundles = {}
    for k in ros:
        items = [roster[p] for p in ros]
        pieces: list[bytes] = []
        for j in ros:
            pieces += [p2s[j].b, p2s[j].b_sig, p2s[j].shares.get(k, b"")]
        bundles[k] = _pack({"label": label, "t": t, "roster": list(ros)}, items + pieces)
    return public, bundles


@dataclass(frozen=True, eq=False)
class ThresholdPartyMaterial:
    """A party's key material: its own key share and the Shamir shares dealt to it."""

    public: ThresholdPublic
    party_id: str
    sign_key: bytes = field(repr=False)
    s_ntt: np.ndarray = field(repr=False)  # own additive share s_i (L, N), NTT form
    shares: dict[str, np.ndarray] = field(repr=False, default_factory=dict)  # dealer -> share at my point
    pair_keys: dict[str, bytes] = field(repr=False, default_factory=dict)  # peer -> 32-byte zero-sharing key

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, ThresholdPartyMaterial) and self.public == other.public
                and (self.party_id, self.sign_key, self.pair_keys) == (other.party_id, other.sign_key, other.pair_keys)
                and np.array_equal(self.s_ntt, other.s_ntt) and self.shares.keys() == other.shares.keys()
                and all(np.array_equal(v, other.shares[k]) for k, v in self.shares.items()))

    __hash__ = None  # type: ignore[assignment]


def party_material(secret: KeygenSecret, bundle: bytes) -> ThresholdPartyMaterial:
    """Party side: accept the assembled key only if every b_j matches the commitment j signed in
    phase 1 (the same roster this party dealt against), and open the shares dealt to it."""
    ring = rlwe.ring_for()
    obj, blobs = _unpack(bundle, "keygen bundle")
    ids = obj.get("roster")
    if not isinstance(ids, list) or len(blobs) != 4 * len(ids):
        raise KeygenError("keygen bundle: malformed")
    ros = _roster(secret.label, dict(zip(map(str, ids), blobs[: len(ids)])))
    if tuple(p.raw for p in ros.values()) != secret.roster:
        raise KeygenError("keygen bundle: the roster differs from the one we dealt shares against")
    t = threshold_for(len(ros), secret.threshold_fraction)
    if obj.get("t") != t:
        raise KeygenError(f"keygen bundle: threshold {obj.get('t')} differs from ours ({t})")
    b = np.zeros((ring.size, ring.n), dtype=np.uint64)
    shares, pair_keys = {}, {}
    for i, pid in enumerate(ros):
        pb, psig, enc = blobs[len(ids) + 3 * i : len(ids) + 3 * i + 3]
        _check_phase2(secret.label, ros, pid, Phase2(pid, t, pb, psig, {}), t)
        b = ring.add(b, elem_from(ring, pb, f"key share of {pid!r}"))
        if pid == secret.party_id:
            shares[pid] = secret.own_share
            continue
        pair_keys[pid] = _pair_key(secret.dh_key, ros[pid].dh_pub, secret.label, pid, secret.party_id)
        aead = _share_key(secret.dh_key, ros[pid].dh_pub, secret.label, pid, secret.party_id)
        try:
            raw = aead.decrypt(enc[:12], enc[12:], _share_aad(secret.label, pid, secret.party_id))
        except (InvalidTag, ValueError):
            raise KeygenError(f"keygen bundle: the share from {pid!r} does not open") from None
        shares[pid] = elem_from(ring, raw, f"share from {pid!r}")
    public = _public(secret.label, ros, t, b)
    return ThresholdPartyMaterial(public, secret.party_id, secret.sign_key, secret.s_ntt, shares, pair_keys)


def provision(party_ids: tuple[str, ...], threshold_fraction: float = 0.5, label: str = DEFAULT_LABEL,
              rng: ByteSource = os.urandom) -> tuple[ThresholdPublic, dict[str, ThresholdPartyMaterial]]:
    """The keygen flow in process, on objects (tests): every step as on the parties' machines; the
    operator step sees public bytes only. The protocol's provision goes through the byte hooks."""
    if len(set(party_ids)) != len(party_ids) or len(party_ids) < 2:
        raise ValueError("party_ids must be at least 2 distinct ids")
    phase1 = {pid: party_keygen(label, pid, threshold_fraction, rng) for pid in party_ids}
    roster = {pid: pub for pid, (_, pub) in phase1.items()}
    phase2 = {pid: party_keygen_finish(sec, roster, rng) for pid, (sec, _) in phase1.items()}
    public, bundles = assemble(roster, {pid: pub for pid, (_, pub) in phase2.items()})
    return public, {pid: party_material(sec, bundles[pid]) for pid, (sec, _) in phase2.items()}
