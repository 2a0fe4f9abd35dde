"""Serialized key material for deployment: the server folder gets `server.hekit` (parameters and key
id: no key at all), each party kit gets `party.hekit` (the same plus the shared secret key).

File layout (no pickle):

    magic "SFHEKIT1" | role u8 (0 server, 1 party) | len u32 | JSON metadata | len u32 | secret key

The server file's secret-key field is empty; its reader refuses any file with a non-empty one, so a
party kit dropped into the server folder by mistake is rejected instead of silently used.

`dump_material`/`load_material` (the deploy layer's MaterialCodec hook, on the HE protocol object)
use the same bytes: the role byte is the kind tag, and "1" in the magic is the format version.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

from securefed.errors import MaterialError
from securefed.protocols.he.config import ParamSet
from securefed.protocols.he.single_key.context import KEY_ID_LEN, HEPartyMaterial, HEPublic, build_context

MAGIC = b"SFHEKIT1"
ROLE_SERVER, ROLE_PARTY = 0, 1
_U8, _U16, _U32 = struct.Struct("<B"), struct.Struct("<H"), struct.Struct("<I")
_KEYS = {"poly_modulus_degree", "coeff_mod_bit_sizes", "scale_bits", "prime", "key_id", "max_parties",
         "error_bound", "measured_error", "roster", "sign_pubs"}


def _meta(public: HEPublic) -> bytes:
    p = public.params
    return json.dumps({
        "poly_modulus_degree": p.poly_modulus_degree,
        "coeff_mod_bit_sizes": list(p.coeff_mod_bit_sizes),
        "scale_bits": p.scale_bits,
        "prime": public.prime,
        "key_id": public.key_id.hex(),
        "max_parties": public.max_parties,
        "error_bound": public.error_bound,
        "measured_error": public.measured_error,
        "roster": list(public.roster),
        "sign_pubs": [p.hex() for p in public.sign_pubs],
    }, sort_keys=True).encode()


def _pack(role: int, public: HEPublic, secret: bytes) -> bytes:
    meta = _meta(public)
    return MAGIC + _U8.pack(role) + _U32.pack(len(meta)) + meta + _U32.pack(len(secret)) + secret


def _unpack(data: bytes, role: int) -> tuple[HEPublic, bytes]:
    def cut(pos: int, n: int) -> bytes:
        if n < 0 or pos + n > len(data):
            raise ValueError("he kit: truncated file")
        return data[pos : pos + n]

    if cut(0, len(MAGIC)) != MAGIC:
        raise ValueError("he kit: not an he key file")
    pos = len(MAGIC)
    if _U8.unpack(cut(pos, 1))[0] != role:
        raise ValueError(f"he kit: expected a {'party' if role else 'server'} kit")
    pos += 1
    (n,) = _U32.unpack(cut(pos, 4))
    raw = cut(pos + 4, n)
    pos += 4 + n
    (s,) = _U32.unpack(cut(pos, 4))
    secret = cut(pos + 4, s)
    if pos + 4 + s != len(data):
        raise ValueError("he kit: trailing bytes")
    try:
        meta = json.loads(raw)
    except ValueError:
        raise ValueError("he kit: corrupt metadata") from None
    if not isinstance(meta, dict) or set(meta) != _KEYS:
        raise ValueError("he kit: unexpected metadata fields")
    key_id = bytes.fromhex(meta["key_id"])
    if len(key_id) != KEY_ID_LEN:
        raise ValueError("he kit: bad key id")
    params = ParamSet(int(meta["poly_modulus_degree"]), tuple(int(b) for b in meta["coeff_mod_bit_sizes"]),
                      int(meta["scale_bits"]))
    build_context(params, int(meta["prime"]))  # the parameters must rebuild the same modulus
    roster = tuple(str(p) for p in meta["roster"])
    pubs = tuple(bytes.fromhex(p) for p in meta["sign_pubs"])
    if len(roster) != len(pubs) or tuple(sorted(set(roster))) != roster or any(len(p) != 32 for p in pubs):
        raise ValueError("he kit: bad roster or signing keys")
    public = HEPublic(params, int(meta["prime"]), key_id, int(meta["max_parties"]),
                      float(meta["error_bound"]),
                      None if meta["measured_error"] is None else float(meta["measured_error"]), roster, pubs)
    return public, secret


def server_kit_bytes(public: HEPublic) -> bytes:
    return _pack(ROLE_SERVER, public, b"")


def server_kit_from_bytes(data: bytes) -> HEPublic:
    public, secret = _unpack(data, ROLE_SERVER)
    if secret:
        raise ValueError("he kit: a server kit must not carry a secret key")
    return public


def party_kit_bytes(material: HEPartyMaterial) -> bytes:
    """Secret field: u16 id length | party id | Ed25519 private key (32) | SEAL secret key."""
    pid = material.party_id.encode()
    secret = _U16.pack(len(pid)) + pid + material.sign_key + material.secret_key_bytes
    return _pack(ROLE_PARTY, material.public, secret)


def party_kit_from_bytes(data: bytes) -> HEPartyMaterial:
    public, secret = _unpack(data, ROLE_PARTY)
    if len(secret) < 2:
        raise ValueError("he kit: party kit has no secret key")
    (n,) = _U16.unpack_from(secret)
    pid, sign_key, sk = secret[2 : 2 + n].decode("utf-8", "replace"), secret[2 + n : 34 + n], secret[34 + n :]
    if pid not in public.roster or len(sign_key) != 32 or not sk:
        raise ValueError("he kit: party kit has no secret key, or a party id outside its roster")
    material = HEPartyMaterial(public, sk, pid, sign_key)
    try:
        _ = material.secret_key  # SEAL validates the key against the parameters now, not mid-round
    except Exception:
        raise ValueError("he kit: secret key does not match the parameters") from None
    return material


def dump_material(material: HEPublic | HEPartyMaterial) -> bytes:
    """Server material (HEPublic: no key) or party material (HEPartyMaterial) as kit bytes."""
    if isinstance(material, HEPartyMaterial):
        return party_kit_bytes(material)
    if isinstance(material, HEPublic):
        return server_kit_bytes(material)
    raise TypeError(f"he: cannot serialize {type(material).__name__} (expected HEPublic or HEPartyMaterial)")


def load_material(data: bytes) -> HEPublic | HEPartyMaterial:
    """Inverse of dump_material: the role byte says which kind. Raises MaterialError if malformed."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("he material must be bytes")
    data = bytes(data)
    if len(data) < len(MAGIC) + 1 or data[: len(MAGIC)] != MAGIC:
        raise MaterialError("he kit: not an he key file (bad magic or truncated)")
    role = data[len(MAGIC)]
    try:
        if role == ROLE_SERVER:
            return server_kit_from_bytes(data)
        if role == ROLE_PARTY:
            return party_kit_from_bytes(data)
    except MaterialError:
        raise
    except (ValueError, TypeError, KeyError, OverflowError, RuntimeError) as e:  # bad JSON values, SEAL
        raise MaterialError(str(e) if str(e).startswith("he kit:") else f"he kit: corrupt ({e})") from None
    raise MaterialError(f"he kit: unknown role {role}")


def write_server_kit(public: HEPublic, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.write_bytes(server_kit_bytes(public))
    return path


def write_party_kit(material: HEPartyMaterial, path: str | os.PathLike) -> Path:
    """Written 0600: the file holds the federation's secret key."""
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(party_kit_bytes(material))
    return path


def read_server_kit(path: str | os.PathLike) -> HEPublic:
    return server_kit_from_bytes(Path(path).read_bytes())


def read_party_kit(path: str | os.PathLike) -> HEPartyMaterial:
    return party_kit_from_bytes(Path(path).read_bytes())
