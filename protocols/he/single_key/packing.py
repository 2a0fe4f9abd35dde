"""Fixed-point encoding and slot packing for `he`: several small signed integers per CKKS slot.

Logical vector (n_values integers), as plain's layout [w*delta | control | w] plus a clip count:

    [ q(w*delta) (m) | q(control) (m, if any) | weight digits | clipped-count digits ]

Each value is a signed integer with |q| <= Q = 2**(value_bits-1) - 1. A sum over n parties stays
within n*Q < 2**(digit_bits-1), digit_bits = value_bits + ceil(log2 n), so k = C // digit_bits
values share one real slot as balanced base-2**digit_bits digits (C: a slot's exact capacity):

    V = sum_j d_j * B**j,   B = 2**digit_bits     (sums of V's stay exact: digits do not carry)

Ciphertext i holds logical values [i*k*N, (i+1)*k*N): digit j of real slot r is value j*N + r.
CKKS only ever sees integers; the decryptor rounds, so CKKS noise never reaches the result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from securefed.protocols.base import PartyInput, ProtocolError, RoundContext
from securefed.protocols.he.config import HEConfig
from securefed.protocols.he.single_key.context import HEPublic, capacity_bits

WEIGHT_BITS = 40  # weight is sent as round(w / max_weight * 2**40), spread over several digits


@dataclass(frozen=True)
class Layout:
    """Everything both sides derive from (round context, config, parameters)."""

    m: int
    has_control: bool
    max_weight: float
    clip: float
    q_max: int  # Q = 2**(value_bits-1) - 1
    radix_bits: int  # value_bits - 1: base of the non-negative scalar digits
    weight_digits: int
    count_digits: int
    digit_bits: int
    k: int  # values per real slot
    slots: int  # real slots per ciphertext
    n_values: int

    @classmethod
    def for_round(cls, ctx: RoundContext, config: HEConfig, public: HEPublic) -> "Layout":
        n = len(ctx.party_ids)
        if n > public.max_parties:
            raise ValueError(f"round has {n} parties, keys were provisioned for {public.max_parties}")
        b = config.value_bits
        digit_bits = b + max(1, math.ceil(math.log2(n)))
        k = capacity_bits(public.params) // digit_bits
        if k < 1:
            raise ValueError(f"value_bits={b} does not fit a slot for {n} parties")
        m = ctx.vector_len
        radix = b - 1
        weight_digits = -(-(WEIGHT_BITS + 1) // radix)
        count_digits = -(-(2 * m + 1).bit_length() // radix)
        n_values = m * (2 if ctx.has_control else 1) + weight_digits + count_digits
        return cls(m, ctx.has_control, float(ctx.max_weight), config.clip, 2**radix - 1, radix,
                   weight_digits, count_digits, digit_bits, k, public.slots, n_values)

    @property
    def values_per_ct(self) -> int:
        return self.k * self.slots

    @property
    def n_ct(self) -> int:
        return -(-self.n_values // self.values_per_ct)

    @property
    def delta_step(self) -> float:
        """Quantum of w*delta: w*delta / (max_weight * clip) is quantized to [-Q, Q]."""
        return self.max_weight * self.clip / self.q_max

    @property
    def control_step(self) -> float:
        return self.clip / self.q_max

    @property
    def weight_step(self) -> float:
        return self.max_weight / 2.0**WEIGHT_BITS

    def error_bounds(self, n_contributors: int) -> dict[str, float]:
        """Worst-case |he - exact| per coordinate, for inputs within clip (rounding: half a step)."""
        return {
            "delta_sum": n_contributors * self.delta_step / 2,
            "control_sum": n_contributors * self.control_step / 2,
            "total_weight": n_contributors * self.weight_step / 2,
        }


class Quantizer:
    """One party's input as integers, produced one ciphertext's worth at a time."""

    def __init__(self, layout: Layout, data: PartyInput) -> None:
        self.layout = layout
        self.data = data
        lay = layout
        self._w = float(data.weight)
        clipped = int(np.count_nonzero(np.abs(data.delta) > lay.clip))
        if data.control_delta is not None:
            clipped += int(np.count_nonzero(np.abs(data.control_delta) > lay.clip))
        w_int = int(round(self._w / lay.max_weight * 2.0**WEIGHT_BITS))
        self._scalars = np.array(
            _digits(w_int, lay.radix_bits, lay.weight_digits) + _digits(clipped, lay.radix_bits, lay.count_digits),
            dtype=np.int64,
        )

    def values(self, start: int, stop: int) -> np.ndarray:
        """Logical values [start, stop) as int64, zero past the end: (stop - start,)."""
        lay, out = self.layout, np.zeros(stop - start, dtype=np.int64)
        m = lay.m
        segments = [(0, m, self._delta)]
        if lay.has_control:
            segments.append((m, 2 * m, self._control))
        base = 2 * m if lay.has_control else m
        segments.append((base, base + self._scalars.size, lambda a, b: self._scalars[a:b]))
        for seg_start, seg_stop, fetch in segments:
            lo, hi = max(start, seg_start), min(stop, seg_stop)
            if lo < hi:
                out[lo - start : hi - start] = fetch(lo - seg_start, hi - seg_start)
        return out

    def _delta(self, a: int, b: int) -> np.ndarray:
        lay = self.layout
        d = np.clip(self.data.delta[a:b].astype(np.float64), -lay.clip, lay.clip)
        return np.rint(d * (self._w / lay.delta_step)).astype(np.int64)

    def _control(self, a: int, b: int) -> np.ndarray:
        lay = self.layout
        c = np.clip(self.data.control_delta[a:b].astype(np.float64), -lay.clip, lay.clip)
        return np.rint(c / lay.control_step).astype(np.int64)

    def slot_values(self, ct_index: int) -> np.ndarray:
        """The packed real slots of ciphertext `ct_index`: (slots,) float64 integers."""
        lay = self.layout
        start = ct_index * lay.values_per_ct
        digits = self.values(start, start + lay.values_per_ct).reshape(lay.k, lay.slots)
        packed = np.zeros(lay.slots, dtype=np.int64)
        for j in range(lay.k - 1, -1, -1):  # Horner: exact in int64 (k * digit_bits <= 51)
            packed = (packed << lay.digit_bits) + digits[j]
        return packed.astype(np.float64)


def _digits(x: int, radix_bits: int, count: int) -> list[int]:
    """Non-negative x as `count` base-2**radix_bits digits, least significant first."""
    if x < 0 or x >> (radix_bits * count):
        raise ValueError("scalar out of range")
    mask = (1 << radix_bits) - 1
    return [(x >> (radix_bits * i)) & mask for i in range(count)]


def unpack(layout: Layout, packed: np.ndarray, n_contributors: int) -> np.ndarray:
    """Summed slots (n_ct * slots,) int64 -> logical value sums (n_values,) int64.
    Raises ProtocolError if any digit lies outside what n_contributors could produce."""
    lay = layout
    if packed.shape != (lay.n_ct * lay.slots,):
        raise ProtocolError("malformed message")
    rest = packed.reshape(lay.n_ct, lay.slots).copy()
    base, half = 1 << lay.digit_bits, 1 << (lay.digit_bits - 1)
    digits = np.empty((lay.n_ct, lay.k, lay.slots), dtype=np.int64)
    for j in range(lay.k):
        d = ((rest + half) % base) - half  # balanced digit in [-B/2, B/2)
        digits[:, j, :] = d
        rest = (rest - d) >> lay.digit_bits  # exact: rest - d is a multiple of B
    if np.any(rest != 0):
        raise ProtocolError("malformed message")
    values = digits.reshape(-1)[: lay.n_values]
    limit = n_contributors * lay.q_max
    if np.any(np.abs(values) > limit):
        raise ProtocolError("malformed message")
    if np.any(values[lay.n_values - lay.weight_digits - lay.count_digits :] < 0):
        raise ProtocolError("malformed message")
    return values


def dequantize(layout: Layout, values: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, float, int]:
    """Value sums -> (delta_sum (m,), control_sum (m,) or None, total_weight, clipped count)."""
    lay, m = layout, layout.m
    delta_sum = values[:m].astype(np.float64) * lay.delta_step
    control_sum = values[m : 2 * m].astype(np.float64) * lay.control_step if lay.has_control else None
    base = 2 * m if lay.has_control else m
    radix = 1 << lay.radix_bits
    w = values[base : base + lay.weight_digits]
    c = values[base + lay.weight_digits : base + lay.weight_digits + lay.count_digits]
    w_int = sum(int(d) * radix**i for i, d in enumerate(w))
    clipped = sum(int(d) * radix**i for i, d in enumerate(c))
    return delta_sum, control_sum, w_int * lay.weight_step, clipped
