"""The low-level layer of secagg: every cryptographic primitive it uses, all from `cryptography`.

- X25519 key agreement, HKDF-SHA256 with one `info` label per purpose (pairwise mask seed, share
  encryption key, graph seed), so no two purposes can ever derive the same key.
- AES-256-GCM to encrypt Shamir shares, the round and both party ids as associated data.
- Ed25519 signatures (identity keys from provisioning).
- AES-256-CTR as the PRG, keyed with the full 256-bit seed, expanding masks into Z_{2^b}.

Nothing here draws randomness itself: callers pass an `Rng` (os.urandom at the edge, a fixed
stream in tests), which keeps the protocol deterministic under test.
"""

from __future__ import annotations

import hashlib
import os
import struct
import sys
from typing import Callable, Mapping, Sequence

import numpy as np
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from securefed.protocols.base import ProtocolError
from securefed.protocols.encoding import pack_planes, pack_ring, ring_dtype

Rng = Callable[[int], bytes]

KEY_BYTES = 32
NONCE_BYTES = 12
SIG_BYTES = 64

LABEL_ROUND = b"securefed/secagg/v1/round"
LABEL_PAIRWISE = b"securefed/secagg/v1/pairwise-mask-seed"
LABEL_SHARE_KEY = b"securefed/secagg/v1/share-encryption-key"
LABEL_GRAPH = b"securefed/secagg/v1/neighbour-graph-seed"
LABEL_COMMIT = b"securefed/secagg/v1/self-mask-commitment"
LABEL_ATTEMPT = b"securefed/secagg/v2/attempt"
LABEL_ROSTER = b"securefed/secagg/v2/roster"

_ZERO_IV = bytes(16)  # every PRG key expands exactly one stream, so a fixed counter start is safe
_LITTLE = sys.byteorder == "little"


def os_rng(n: int) -> bytes:
    """The edge: the OS CSPRNG."""
    return os.urandom(n)


def draw(rng: Rng, n: int) -> bytes:
    out = rng(n)
    if not isinstance(out, (bytes, bytearray)) or len(out) != n:
        raise ValueError("rng returned the wrong number of bytes")
    return bytes(out)


def round_salt(federation_id: str, round_: int) -> bytes:
    """32 bytes naming (federation, round): HKDF salt and AEAD context for everything in a round."""
    fed = federation_id.encode()
    return hashlib.sha256(LABEL_ROUND + struct.pack("<I", len(fed)) + fed + struct.pack("<Q", round_)).digest()


def attempt_salt(salt: bytes, attempt: int) -> bytes:
    """32 bytes naming one attempt of a round: every frame, AEAD context and commitment of the attempt
    is bound to it, so nothing signed or sealed in one attempt verifies in another."""
    return hashlib.sha256(LABEL_ATTEMPT + salt + struct.pack("<Q", attempt)).digest()


def roster_seed(identity_keys: Mapping[str, bytes]) -> bytes:
    """A seed fixed once the roster of identity keys is pinned: every party's own fresh public key
    enters it, so neither the server nor the operator picks it (see graph.round_order)."""
    h = hashlib.sha256(LABEL_ROSTER)
    for pid in sorted(identity_keys):
        raw = pid.encode()
        h.update(struct.pack("<I", len(raw)) + raw + bytes(identity_keys[pid]))
    return h.digest()


def hkdf(secret: bytes, salt: bytes, info: bytes, length: int = KEY_BYTES) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(secret)


# --- X25519 -----------------------------------------------------------------------------------


def x25519_private(raw: bytes) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(raw)


def x25519_public_bytes(sk: X25519PrivateKey) -> bytes:
    return sk.public_key().public_bytes_raw()


# A fixed, public scalar: X25519 with any clamped scalar maps a low-order point to the identity,
# whose all-zero output `cryptography` refuses; so one exchange tells a low-order key apart.
_PROBE = X25519PrivateKey.from_private_bytes(hashlib.sha256(b"securefed/secagg/v2/low-order-probe").digest())
_P25519 = 2**255 - 19


def check_x25519_public(pk: bytes) -> bytes:
    """Raises ProtocolError unless pk is a canonical (u < p, top bit clear) X25519 public key of
    large order. A low-order key would make every pairwise secret with its owner a public
    constant; a non-canonical one gives two encodings of one key."""
    if not isinstance(pk, (bytes, bytearray)) or len(pk) != KEY_BYTES or int.from_bytes(pk, "little") >= _P25519:
        raise ProtocolError("invalid message")
    try:
        _PROBE.exchange(X25519PublicKey.from_public_bytes(bytes(pk)))
    except ValueError:
        raise ProtocolError("invalid message") from None
    return bytes(pk)


def _agree(sk: X25519PrivateKey, peer_pk: bytes) -> bytes:
    try:
        return sk.exchange(X25519PublicKey.from_public_bytes(peer_pk))
    except ValueError:  # wrong length or a low-order point (all-zero shared secret)
        raise ProtocolError("invalid message") from None


def pairwise_seed(sk: X25519PrivateKey, peer_pk: bytes, salt: bytes, idx_a: int, idx_b: int) -> bytes:
    """The 256-bit PRG key both ends of edge {a, b} derive; symmetric in (a, b)."""
    lo, hi = sorted((idx_a, idx_b))
    return hkdf(_agree(sk, peer_pk), salt, LABEL_PAIRWISE + struct.pack("<II", lo, hi))


def share_key(sk: X25519PrivateKey, peer_pk: bytes, salt: bytes, sender: int, recipient: int) -> bytes:
    """AES-GCM key for shares sender -> recipient. Directional, so each key seals one message."""
    return hkdf(_agree(sk, peer_pk), salt, LABEL_SHARE_KEY + struct.pack("<II", sender, recipient))


# --- AES-GCM ----------------------------------------------------------------------------------


def seal(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """-> nonce || ciphertext || tag."""
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def open_sealed(key: bytes, blob: bytes, aad: bytes) -> bytes:
    """Raises ProtocolError (opaque) on any tampering, wrong key or wrong associated data."""
    if len(blob) < NONCE_BYTES + 16:
        raise ProtocolError("invalid message")
    try:
        return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
    except InvalidTag:
        raise ProtocolError("invalid message") from None


# --- Ed25519 ----------------------------------------------------------------------------------


def ed25519_private(raw: bytes) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(raw)


def ed25519_public_bytes(sk: Ed25519PrivateKey) -> bytes:
    return sk.public_key().public_bytes_raw()


def verify_signature(pk: bytes, signature: bytes, data: bytes) -> None:
    """Raises ProtocolError unless `signature` is pk's signature on data."""
    try:
        Ed25519PublicKey.from_public_bytes(pk).verify(signature, data)
    except (InvalidSignature, ValueError):
        raise ProtocolError("invalid message") from None


def commit(secret: bytes, salt: bytes) -> bytes:
    """Hiding commitment to a uniformly random 256-bit secret (the self-mask seed): the server
    checks a reconstruction against it, so a bad share is caught instead of corrupting the sum."""
    return hashlib.sha256(LABEL_COMMIT + salt + secret).digest()


# --- PRG --------------------------------------------------------------------------------------


def keystream(key: bytes, nbytes: int) -> bytes:
    """AES-256-CTR keystream: the PRG. `key` must be a full 256-bit secret."""
    if len(key) != KEY_BYTES:
        raise ValueError("PRG key must be 32 bytes")
    return Cipher(algorithms.AES(key), modes.CTR(_ZERO_IV)).encryptor().update(bytes(nbytes))


def expand_mask(key: bytes, length: int, bits: int) -> np.ndarray:
    """(length,) uniform elements of Z_{2^b}: the mask MaskAccumulator adds for `key`."""
    acc = MaskAccumulator(np.zeros(length, dtype=ring_dtype(bits)), bits, copy=False)
    acc.add_mask(key, +1)
    return acc.result()


# Rings of 33..40 bits (n ~ 1000 parties at 16 precision bits): a mask element is a 32-bit word plus
# a high byte, lo + 2^32 * hi mod 2^b, so 5 keystream bytes per coordinate instead of 8. The
# accumulator keeps the low 32 bits in uint32 (same-type adds, no casting) and the high bits in a
# uint8 vector (wrapping mod 256 is right mod 2^(b-32)), adding each word's carry into it. (A
# uint64 sum of the low words that keeps carries by itself was slower: numpy's mixed-type add casts.)
SPLIT_MAX_BITS = 40
SPLIT_CHUNK = 1 << 16  # coordinates: 256 KiB of words + 320 KiB of keystream stay in a 1 MiB L2


class MaskAccumulator:
    """acc = x +/- PRG(k1) +/- PRG(k2) ... mod 2^b, in place, without per-coordinate Python.

    The keystream is generated chunk by chunk into one small reused buffer (update_into; CTR
    continues across chunks) and added as words: the buffer stays in cache, and wrap-around mod the
    word size followed by the final mask gives the sum mod 2^b. Keystream layout, per chunk of c
    coordinates: b <= 32: c little-endian uint32 words; 32 < b <= 40: c uint32 words then c high
    bytes; b > 40: c uint64 words. Chunks are CHUNK_BYTES // word size coordinates (split rings:
    SPLIT_CHUNK), the same on every party and the server, so a key always expands to the same mask.
    """

    CHUNK_BYTES = 1 << 20  # 1 MiB of words: accumulator chunk + keystream stay in L2 (2x faster than 4 MiB)

    def __init__(self, initial: np.ndarray, bits: int, copy: bool = True) -> None:
        dtype = ring_dtype(bits)
        if initial.dtype != dtype or initial.ndim != 1:
            raise ValueError("initial vector must be 1-d of the ring dtype")
        self.bits = bits
        self._acc = initial.copy() if copy else initial  # (L,)
        self._split = 32 < bits <= SPLIT_MAX_BITS
        self._words = SPLIT_CHUNK if self._split else max(1, self.CHUNK_BYTES // dtype.itemsize)
        c = min(initial.size, self._words)
        self._per = 5 if self._split else dtype.itemsize  # keystream bytes per coordinate
        self._zeros = bytes(c * self._per)
        self._buf = bytearray(c * self._per + 16)  # update_into wants room for one more block
        if self._split:
            if not _LITTLE:
                raise ValueError("split ring needs a little-endian machine")
            self._lo = self._acc.astype(np.uint32)  # (L,) low 32 bits (a truncating cast: one pass)
            self._hi = self._acc.view(np.uint8)[4::8].copy()  # (L,) byte 4 = bits 32..39, mod 256
            self._carry = np.empty(c, dtype=bool)

    def add(self, other: np.ndarray) -> None:
        if self._split:
            raise ValueError("add() before masking only")  # not needed by the protocol on this path
        self._acc += other.astype(self._acc.dtype, copy=False)

    def add_mask(self, key: bytes, sign: int) -> None:
        self.add_masks([(key, sign)])

    def add_masks(self, masks: Sequence[tuple[bytes, int]]) -> None:
        """acc += sign * PRG(key) for every (key, sign), chunk-major: each accumulator chunk takes all
        masks while it is in cache (one pass over the vector instead of one per key: at 8.4M
        coordinates and 17 keys the memory traffic, not AES, was the cost). Every key's keystream is
        still consumed chunk after chunk, so each mask is the one `add_mask` alone would add."""
        for key, _ in masks:
            if len(key) != KEY_BYTES:
                raise ValueError("PRG key must be 32 bytes")
        streams = [(Cipher(algorithms.AES(key), modes.CTR(_ZERO_IV)).encryptor(), sign > 0) for key, sign in masks]
        target = self._lo if self._split else self._acc
        for start in range(0, target.size, self._words):
            chunk = target[start : start + self._words]
            c = chunk.size
            if self._split:
                hi, carry = self._hi[start : start + c], self._carry[:c]
            for encryptor, plus in streams:
                encryptor.update_into(memoryview(self._zeros)[: c * self._per], self._buf)
                words = np.frombuffer(self._buf, dtype=chunk.dtype.newbyteorder("<"), count=c)
                if not self._split:
                    if plus:
                        chunk += words
                    else:
                        chunk -= words
                    continue
                high = np.frombuffer(self._buf, dtype=np.uint8, count=c, offset=4 * c)
                if plus:
                    chunk += words
                    np.less(chunk, words, out=carry)  # wrapped past 2^32: carry one into the high bits
                    hi += high
                    hi += carry.view(np.uint8)  # same-type add: no casting loop
                else:
                    np.less(chunk, words, out=carry)  # will wrap below 0: borrow one from the high bits
                    chunk -= words
                    hi -= high
                    hi -= carry.view(np.uint8)

    def packed(self) -> bytes:
        """The masked vector in the ring wire layout (`encoding.pack_ring`). Split rings are packed
        from their two planes directly: no recombination into 64-bit words, no 33..40-bit windows."""
        if not self._split:
            return pack_ring(self.result(), self.bits)
        return pack_planes(self._lo, self._hi, self.bits)

    def result(self) -> np.ndarray:
        if self._split:
            words = self._acc.view(np.uint32).reshape(-1, 2)  # (L, 2): low, high half of each word
            words[:, 0] = self._lo
            words[:, 1] = self._hi
        np.bitwise_and(self._acc, self._acc.dtype.type((1 << self.bits) - 1), out=self._acc)
        return self._acc


def prg_reader(key: bytes) -> Rng:
    """A CSPRNG stream as an Rng: successive calls return successive keystream bytes. Used for
    the stochastic-rounding dither, seeded with 32 bytes from the caller's rng."""
    if len(key) != KEY_BYTES:
        raise ValueError("PRG key must be 32 bytes")
    encryptor = Cipher(algorithms.AES(key), modes.CTR(_ZERO_IV)).encryptor()
    return lambda n: encryptor.update(bytes(n))
