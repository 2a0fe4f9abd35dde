"""Threshold `he` key material as bytes (the deploy layer's MaterialCodec hook; no pickle):

    magic "SFHETK3" | role u8 (0 server, 1 party) | threshold.blobs packing: JSON head + binary blobs

Server: label, roster, threshold, Ed25519 public keys, collective public key, every party's signed
phase-1 keys (what the roster's fingerprints cover; "SFHETK2" files, without them, still load and
name no phase-1 keys, so a kit check against fingerprints refuses them). Party: the same plus
its party id, Ed25519 private key, own key share, the Shamir shares dealt to it and its pairwise
zero-sharing keys, one per peer (file mode 0600
is the deploy layer's job). The key id is recomputed from the contents on load, never trusted.
"""

from __future__ import annotations

from securefed.errors import MaterialError
from securefed.protocols.he import rlwe
from securefed.protocols.he.threshold.blobs import KeygenError, elem_bytes, elem_from
from securefed.protocols.he.threshold.blobs import pack as _pack
from securefed.protocols.he.threshold.blobs import unpack as _unpack
from securefed.protocols.he.threshold.keys import ThresholdPartyMaterial, ThresholdPublic, check_phase1, public_key_id

MAGIC = b"SFHETK3"  # 2: pair keys for the zero sharing at decryption; 3: the phase-1 keys
OLD_MAGIC = b"SFHETK2"
ROLE_SERVER, ROLE_PARTY = 0, 1


def _public_parts(pub: ThresholdPublic) -> tuple[dict, list[bytes]]:
    return ({"label": pub.label, "roster": list(pub.roster), "t": pub.threshold},
            [elem_bytes(pub.b_ntt), *pub.sign_pubs, *pub.phase1])


def dump(material: ThresholdPublic | ThresholdPartyMaterial) -> bytes:
    if isinstance(material, ThresholdPublic):
        head, blobs = _public_parts(material)
        return MAGIC + bytes([ROLE_SERVER]) + _pack(head, blobs)
    if isinstance(material, ThresholdPartyMaterial):
        head, blobs = _public_parts(material.public)
        dealers = sorted(material.shares)
        head.update(party_id=material.party_id, dealers=dealers)
        peers = [p for p in material.public.roster if p != material.party_id]
        blobs += [material.sign_key, elem_bytes(material.s_ntt), *(elem_bytes(material.shares[d]) for d in dealers),
                  *(material.pair_keys[p] for p in peers)]
        return MAGIC + bytes([ROLE_PARTY]) + _pack(head, blobs)
    raise TypeError(f"he: cannot serialize {type(material).__name__}")


def load(data: bytes) -> ThresholdPublic | ThresholdPartyMaterial:
    """Raises MaterialError naming what is wrong."""
    data = bytes(data)
    if not data.startswith((MAGIC, OLD_MAGIC)) or len(data) < len(MAGIC) + 1 or data[len(MAGIC)] not in (0, 1):
        raise MaterialError("he threshold kit: bad magic or role")
    with_phase1 = data.startswith(MAGIC)
    role = data[len(MAGIC)]
    ring = rlwe.ring_for()
    try:
        head, blobs = _unpack(data[len(MAGIC) + 1 :], "he threshold kit")
        roster = tuple(str(p) for p in head["roster"])
        t = int(head["t"])
        if len(set(roster)) != len(roster) or tuple(sorted(roster)) != roster or not 2 <= t <= len(roster):
            raise KeygenError("he threshold kit: bad roster or threshold")
        n = len(roster)
        b = elem_from(ring, blobs[0], "he threshold kit: public key")
        pubs = tuple(blobs[1 : 1 + n])
        if any(len(p) != 32 for p in pubs):
            raise KeygenError("he threshold kit: bad signing key")
        label = str(head["label"])
        p1 = tuple(blobs[1 + n : 1 + 2 * n]) if with_phase1 else ()
        public = ThresholdPublic(label, roster, pubs, t, b, public_key_id(label, roster, pubs, t, b), p1)
        if with_phase1:
            check_phase1(public)
        o = 1 + n + len(p1)  # the public blobs end here
        if role == ROLE_SERVER:
            if len(blobs) != o:
                raise KeygenError("he threshold kit: a server kit must not carry secrets")
            return public
        pid, dealers = str(head["party_id"]), [str(d) for d in head["dealers"]]
        if pid not in roster or sorted(dealers) != list(roster) or len(blobs) != o + 2 + n + n - 1:
            raise KeygenError("he threshold kit: party id or shares do not match the roster")
        sign_key = blobs[o]
        if len(sign_key) != 32:
            raise KeygenError("he threshold kit: bad signing key")
        s = elem_from(ring, blobs[o + 1], "he threshold kit: key share")
        shares = {d: elem_from(ring, blobs[o + 2 + i], f"he threshold kit: share from {d!r}") for i, d in enumerate(dealers)}
        peers = [p for p in roster if p != pid]
        pair_keys = dict(zip(peers, blobs[o + 2 + n :]))
        if any(len(k) != 32 for k in pair_keys.values()):
            raise KeygenError("he threshold kit: bad pair key")
        return ThresholdPartyMaterial(public, pid, sign_key, s, shares, pair_keys)
    except (KeygenError, KeyError, TypeError, ValueError, IndexError) as e:
        raise MaterialError(str(e) if str(e).startswith("he threshold kit") else f"he threshold kit: corrupt ({e})") from None
