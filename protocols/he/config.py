"""`HEConfig`: the `he` protocol's settings (CKKS parameter set, fixed-point precision, decryptor).

Two kinds of settings live here:

- the CKKS parameter set (`preset`, or `poly_modulus_degree` + `coeff_mod_bit_sizes` + `scale_bits`):
  fixed at provisioning, validated there against `max_decrypt_error` for the federation's size;
- per-round encoding (`value_bits`, `clip`) and the decryption policy (`decryptor`,
  `min_contributors`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator, model_validator

# Named parameter sets. One 60-bit prime only: the protocol only adds ciphertexts, so there is no
# rescaling (no extra primes) and no key switching (no special prime, hence no relin/galois keys).
# Scale bits are sized so that the CKKS noise of a sum of up to ~64 parties stays < 0.25 quanta.
PRESETS: dict[str, tuple[int, tuple[int, ...], int]] = {
    "n4096": (4096, (60,), 15),
    "n8192": (8192, (60,), 16),
}
DEFAULT_PRESET = "n8192"
_DEGREES = (4096, 8192, 16384, 32768)
# Integer fields checked against an inclusive range: field -> (lo, hi, note after the range).
_INT_RANGES: dict[str, tuple[int, int, str]] = {
    "scale_bits": (1, 58, ""),  # None (preset in use) passes
    "value_bits": (2, 32, ""),
    "stat_security": (20, 40, " bits (flooding must fit the ring)"),
    "precision_bits": (2, 40, ""),
}


@dataclass(frozen=True)
class ParamSet:
    """A resolved CKKS parameter set."""

    poly_modulus_degree: int  # N; N/2 complex slots = N real slots per ciphertext
    coeff_mod_bit_sizes: tuple[int, ...]  # exactly one prime
    scale_bits: int  # CKKS scale = 2**scale_bits


class HEConfig(BaseModel):
    """Settings of the `he` protocol.

    mode "threshold" (default): every party encrypts under its own key with public randomness;
    t decryptors answer for the key sum of a contributor set that a quorum signed
    (protocols/he/threshold/); the ring is fixed (N = 8192, 7 primes of 31 bits, ring.py),
    precision is secagg's (`precision_bits`).
    mode "single_key": the original shared-key CKKS scheme on SEAL (parameter set below: either
    `preset` or the three parameter fields, or neither: the `n8192` preset); see threat-model.md
    for what it does not protect against."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["threshold", "single_key"] = "threshold"
    # threshold mode: t = floor(threshold_fraction * n) + 1 of the n key holders decrypt; fewer
    # than t colluding parties (with the server) learn nothing beyond checked sums.
    threshold_fraction: float = 0.5
    # Statistical security of noise flooding: one partial decryption is within 2^-lambda of one
    # computed from a noiseless ciphertext.
    stat_security: int = 40
    # Fixed point as secagg: one unit = clip / 2^precision_bits (same error bound as secagg).
    precision_bits: int = 16

    preset: Optional[Literal["n4096", "n8192"]] = None
    poly_modulus_degree: Optional[int] = None
    coeff_mod_bit_sizes: Optional[tuple[int, ...]] = None
    scale_bits: Optional[int] = None

    # Fixed point: each coordinate of delta and control delta is clipped to [-clip, clip] and
    # quantized to a signed `value_bits`-bit integer (w * delta relative to max_weight * clip).
    value_bits: int = 16
    clip: float = 1.0
    # Tolerated CKKS decryption error, in quantization steps, before rounding to integers. Must be
    # < 0.5 so that rounding recovers the integer sums exactly (CKKS adds no error to the result).
    max_decrypt_error: float = 0.25
    # Run an encrypt/sum/decrypt self-test at provisioning and refuse if it exceeds the bound.
    self_test: bool = True

    # single_key mode: who decrypts. Only "rotate": round r's one decryptor is roster[r % n], for the
    # whole federation (several decryptors, or a fallback to the next one, would let a server
    # decrypt different sums of one round and subtract them; "first"/"all" were removed for that).
    decryptor: Literal["rotate"] = "rotate"
    # A "sum" of a single party is that party's update: refuse to decrypt fewer contributors.
    # threshold mode never goes below t; with t - 1 colluders in a sum, t + 1 keeps >= 2 honest.
    min_contributors: int = 2

    @field_validator("poly_modulus_degree")
    @classmethod
    def _degree(cls, v: Optional[int]) -> Optional[int]:
        if v is not None and v not in _DEGREES:
            raise ValueError(f"poly_modulus_degree must be one of {_DEGREES}, got {v}")
        return v

    @field_validator("coeff_mod_bit_sizes")
    @classmethod
    def _moduli(cls, v: Optional[tuple[int, ...]]) -> Optional[tuple[int, ...]]:
        if v is None:
            return v
        if len(v) != 1:
            raise ValueError(
                "coeff_mod_bit_sizes must hold exactly one prime: the protocol only adds "
                "ciphertexts (no rescaling, no key switching), and decoding is exact only below "
                "2**52, which one prime already covers"
            )
        if not 30 <= v[0] <= 60:
            raise ValueError(f"coeff_mod_bit_sizes: prime size must be in [30, 60] bits, got {v[0]}")
        return v

    @field_validator(*_INT_RANGES)
    @classmethod
    def _int_range(cls, v: Optional[int], info: ValidationInfo) -> Optional[int]:
        lo, hi, why = _INT_RANGES[info.field_name]
        if v is not None and not lo <= v <= hi:
            raise ValueError(f"{info.field_name} must be in [{lo}, {hi}]{why}, got {v}")
        return v

    @field_validator("clip")
    @classmethod
    def _clip(cls, v: float) -> float:
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"clip must be a finite positive number, got {v}")
        return v

    @field_validator("max_decrypt_error")
    @classmethod
    def _max_err(cls, v: float) -> float:
        if not 0 < v < 0.5:
            raise ValueError(f"max_decrypt_error must be in (0, 0.5) quantization steps, got {v}")
        return v

    @field_validator("min_contributors")
    @classmethod
    def _min_contrib(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"min_contributors must be >= 1, got {v}")
        return v

    @field_validator("threshold_fraction")
    @classmethod
    def _tfrac(cls, v: float) -> float:
        if not (math.isfinite(v) and 0 <= v < 1):
            raise ValueError(f"threshold_fraction must be in [0, 1), got {v}")
        return v

    @model_validator(mode="after")
    def _preset_xor_fields(self) -> "HEConfig":
        fields = (self.poly_modulus_degree, self.coeff_mod_bit_sizes, self.scale_bits)
        if self.preset is not None and any(f is not None for f in fields):
            raise ValueError(
                "preset: give either a preset or poly_modulus_degree/coeff_mod_bit_sizes/scale_bits"
            )
        if self.preset is None and any(f is not None for f in fields) and any(f is None for f in fields):
            raise ValueError(
                "poly_modulus_degree, coeff_mod_bit_sizes and scale_bits must be given together"
            )
        return self

    def param_set(self) -> ParamSet:
        if self.poly_modulus_degree is not None:
            return ParamSet(self.poly_modulus_degree, tuple(self.coeff_mod_bit_sizes), self.scale_bits)
        n, bits, scale = PRESETS[self.preset or DEFAULT_PRESET]
        return ParamSet(n, bits, scale)
