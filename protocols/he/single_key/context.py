"""CKKS context, key material and provisioning for `he`, on TenSEAL's SEAL binding (`tenseal.sealapi`).

Why the low-level binding rather than `tenseal.Context`/`CKKSVector`: the protocol only adds
ciphertexts, and the binding lets us use exactly that:

- one 60-bit prime (`tenseal.Context` insists on a special prime and relinearization keys);
- symmetric (secret-key) encryption, which SEAL serializes *seeded* (the random half of the
  ciphertext travels as a seed): half the upload. Parties hold the secret key anyway;
- both halves of each complex slot (`CKKSVector` encodes reals only): N real slots per ciphertext.

The server's material is public parameters plus a key id: with symmetric encryption and only
additions there is no public or evaluation key at all, so nothing key-like reaches the server.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import tenseal.sealapi as seal
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from securefed.protocols.he.config import HEConfig, ParamSet
from securefed.protocols.he.sealio import load_bytes, save_bytes

NOISE_STD = 3.2  # SEAL's fresh-noise standard deviation (clipped at 6 sigma)
TAIL_SIGMAS = 7.0  # per-slot failure probability ~1e-12 at the bound; the bound itself is < 0.5
KEY_ID_LEN = 16
MAX_EXACT_BITS = 51  # decoding goes through float64: keep sums well inside its 53-bit mantissa


def capacity_bits(params: ParamSet) -> int:
    """Bits of signed integer payload per real slot: |V| < 2**(C-1) keeps V*scale + noise below q/2
    with a bit to spare, and V exact in float64."""
    return min(params.coeff_mod_bit_sizes[0] - 2 - params.scale_bits, MAX_EXACT_BITS)


def noise_bound(params: ParamSet, n_parties: int) -> float:
    """High-probability bound on |decrypted - exact| of an n-party sum, in integer units (quanta).

    Each real slot of a fresh symmetric encryption carries sum_j e_j cos(.) over N coefficients,
    e_j ~ noise (sd 3.2) + encoding rounding (sd 1/sqrt(12)): sd = sqrt((3.2**2 + 1/12) * N/2),
    times sqrt(n) for a sum. Add a float64 decoding term: sqrt(N/2) * |V|max * 2**-52.
    """
    n = params.poly_modulus_degree
    sd = math.sqrt((NOISE_STD**2 + 1 / 12) * n / 2 * n_parties) / 2.0**params.scale_bits
    fp = math.sqrt(n / 2) * 2.0 ** (capacity_bits(params) - 1) * 2.0**-52
    return TAIL_SIGMAS * sd + fp


@dataclass(frozen=True)
class HEPublic:
    """What the server holds: parameters, key id, and the provisioning-time error figures."""

    params: ParamSet
    prime: int  # the coefficient modulus q, recorded so a rebuilt context can be checked
    key_id: bytes  # random label of this key generation; ciphertexts carry it
    max_parties: int  # federation size the error bound was validated for
    error_bound: float  # noise_bound(params, max_parties), quanta
    measured_error: float | None  # self-test at provisioning, quanta (None: self-test off)
    roster: tuple[str, ...] = ()  # provisioned party ids, sorted: round r's decryptor is roster[r % n]
    sign_pubs: tuple[bytes, ...] = ()  # Ed25519 public keys, roster order: uploads are signed

    def decryptor(self, round_: int) -> str:
        """The one party of the federation that may decrypt round `round_`'s sum."""
        return self.roster[round_ % len(self.roster)]

    def sign_pub(self, pid: str) -> bytes:
        return self.sign_pubs[self.roster.index(pid)]

    @cached_property
    def context(self) -> seal.SEALContext:
        return build_context(self.params, self.prime)

    @property
    def slots(self) -> int:
        """Real slots per ciphertext (N/2 complex slots, both halves used)."""
        return self.params.poly_modulus_degree

    @property
    def scale(self) -> float:
        return 2.0**self.params.scale_bits

    @property
    def max_ct_bytes(self) -> int:
        """Upper bound on a serialized (inflated) ciphertext: 2 polys x N x 8 bytes + metadata."""
        return 2 * self.params.poly_modulus_degree * 8 + 1024


@dataclass(frozen=True)
class HEPartyMaterial:
    """What each party holds: the public part plus the shared secret key (SEAL-serialized)."""

    public: HEPublic
    secret_key_bytes: bytes = field(repr=False)
    party_id: str = ""
    sign_key: bytes = field(default=b"", repr=False)  # Ed25519 private key (raw 32 bytes)

    @cached_property
    def secret_key(self) -> seal.SecretKey:
        sk = seal.SecretKey()
        load_bytes(lambda p: sk.load(self.public.context, p), self.secret_key_bytes)
        return sk


def build_context(params: ParamSet, prime: int | None = None) -> seal.SEALContext:
    """Raises ValueError naming the field when SEAL rejects the parameters (e.g. 128-bit security)."""
    parms = seal.EncryptionParameters(seal.SCHEME_TYPE.CKKS)
    parms.set_poly_modulus_degree(params.poly_modulus_degree)
    try:
        moduli = seal.CoeffModulus.Create(params.poly_modulus_degree, list(params.coeff_mod_bit_sizes))
    except Exception as e:  # SEAL: no such prime for this degree
        raise ValueError(f"coeff_mod_bit_sizes: {e}") from None
    parms.set_coeff_modulus(moduli)
    ctx = seal.SEALContext(parms, True, seal.SEC_LEVEL_TYPE.TC128)
    if not ctx.parameters_set():
        raise ValueError(
            f"poly_modulus_degree/coeff_mod_bit_sizes rejected by SEAL at 128-bit security: "
            f"{ctx.parameters_error_message()}"
        )
    if prime is not None and moduli[0].value() != prime:
        raise ValueError("coeff_mod_bit_sizes: rebuilt modulus differs from the provisioned one")
    return ctx


class Cipher:
    """Encrypt / decrypt N real integers per ciphertext (complex slots: reals, then imaginaries)."""

    def __init__(self, public: HEPublic, secret_key: seal.SecretKey) -> None:
        self.public = public
        ctx = public.context
        self._encoder = seal.CKKSEncoder(ctx)
        self._encryptor = seal.Encryptor(ctx, secret_key)
        self._decryptor = seal.Decryptor(ctx, secret_key)
        self._half = public.slots // 2

    def encrypt(self, reals: np.ndarray) -> bytes:
        """(N,) float64 integers -> seeded ciphertext bytes."""
        z = reals[: self._half] + 1j * reals[self._half :]
        pt = seal.Plaintext()
        self._encoder.encode(z.tolist(), self.public.scale, pt)
        return save_bytes(self._encryptor.encrypt_symmetric(pt).save)

    def decrypt(self, ct: seal.Ciphertext) -> np.ndarray:
        """ciphertext -> (N,) float64 approximate values."""
        pt = seal.Plaintext()
        self._decryptor.decrypt(ct, pt)
        z = np.asarray(self._encoder.decode_complex(pt))
        return np.concatenate([z.real, z.imag])


def load_ciphertext(public: HEPublic, blob: bytes) -> seal.Ciphertext:
    """Bytes -> ciphertext of this context. Raises (any exception) on anything SEAL rejects or that is
    not a fresh 2-component ciphertext at our level and scale; callers map that to ProtocolError."""
    ct = seal.Ciphertext()
    load_bytes(lambda p: ct.load(public.context, p), blob)
    if (
        ct.size() != 2
        or ct.coeff_modulus_size() != 1
        or ct.poly_modulus_degree() != public.params.poly_modulus_degree
        or list(ct.parms_id()) != list(public.context.first_parms_id())
        or not ct.is_ntt_form()
        or ct.scale != public.scale
    ):
        raise ValueError("ciphertext metadata does not match the context")
    return ct


def provision(config: HEConfig, party_ids: tuple[str, ...]) -> tuple[HEPublic, dict[str, HEPartyMaterial]]:
    """Make the federation's CKKS key material. Raises ValueError (naming the field) for parameters
    that cannot carry `value_bits` for this many parties or whose decryption error bound (or
    measured self-test error) exceeds `max_decrypt_error`."""
    if len(set(party_ids)) != len(party_ids) or not party_ids:
        raise ValueError("party_ids must be non-empty and distinct")
    n = len(party_ids)
    if n < config.min_contributors:
        raise ValueError(f"min_contributors={config.min_contributors} exceeds the {n} parties")
    params = config.param_set()
    ctx = build_context(params)
    digit = config.value_bits + max(1, math.ceil(math.log2(n)))
    if digit > capacity_bits(params):
        raise ValueError(
            f"value_bits={config.value_bits} plus {digit - config.value_bits} bits of headroom for "
            f"{n} parties exceed the {capacity_bits(params)} bits a slot carries at "
            f"scale_bits={params.scale_bits}: lower value_bits or scale_bits"
        )
    bound = noise_bound(params, n)
    if bound > config.max_decrypt_error:
        raise ValueError(
            f"scale_bits={params.scale_bits}: CKKS error bound {bound:.3g} quanta for {n} parties "
            f"exceeds max_decrypt_error={config.max_decrypt_error}; raise scale_bits"
        )
    keygen = seal.KeyGenerator(ctx)
    sk = keygen.secret_key()
    sk_bytes = save_bytes(sk.save)
    prime = ctx.first_context_data().parms().coeff_modulus()[0].value()
    public = HEPublic(params, prime, os.urandom(KEY_ID_LEN), n, bound, None)
    measured = None
    if config.self_test:
        measured = self_test(public, sk, n)
        if measured > config.max_decrypt_error:
            raise ValueError(
                f"scale_bits={params.scale_bits}: measured CKKS error {measured:.3g} quanta exceeds "
                f"max_decrypt_error={config.max_decrypt_error}"
            )
        public = HEPublic(params, prime, public.key_id, n, bound, measured)
    roster = tuple(sorted(party_ids))
    sign = {pid: Ed25519PrivateKey.generate() for pid in roster}
    pubs = tuple(sign[p].public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
                 for p in roster)
    public = dataclasses.replace(public, roster=roster, sign_pubs=pubs)
    raw = (serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    return public, {pid: HEPartyMaterial(public, sk_bytes, pid, sign[pid].private_bytes(*raw)) for pid in party_ids}


def self_test(public: HEPublic, sk: seal.SecretKey, n_parties: int) -> float:
    """Encrypt near-full-scale integers, sum n of them, decrypt; return max |error| in quanta.
    Up to 16 distinct encryptions are reused cyclically: reusing adds noise linearly instead of as
    sqrt(n), so the measurement over- rather than under-estimates."""
    rng = np.random.default_rng()
    cipher = Cipher(public, sk)
    evaluator = seal.Evaluator(public.context)
    per = 2.0 ** (capacity_bits(public.params) - 1) // n_parties - 1  # |sum| < 2**(C-1)
    fresh = [rng.integers(-per, per, size=public.slots, endpoint=True).astype(np.float64) for _ in range(min(16, n_parties))]
    blobs = [cipher.encrypt(v) for v in fresh]
    cts = [load_ciphertext(public, b) for b in blobs]
    total, expected = load_ciphertext(public, blobs[0]), fresh[0].copy()  # own copy: added into
    for i in range(1, n_parties):
        evaluator.add_inplace(total, cts[i % len(cts)])
        expected += fresh[i % len(fresh)]
    return float(np.max(np.abs(cipher.decrypt(total) - expected)))
