"""Fixed-point encoding of a party's update into the ring Z_{2^b}, for protocols that sum integers
(secagg's pairwise masks cancel only in a ring; other protocols may reuse it).

Slot layout, mirroring plain's [w*delta | control | w]:

    [ q(w*delta) (m) | q(control) (m, if any) | q(w) (1) | clipped-count limbs (delta, control) ]

- delta is clipped per coordinate to [-clip, clip], multiplied by the party's weight w (rounded to
  1/2^WEIGHT_FRAC_BITS, so integer sample counts are exact) and scaled so that one unit of the
  ring is clip / 2^precision_bits; stochastic rounding keeps the sum unbiased.
- control (SCAFFOLD) is unweighted, clipped to [-control_clip, control_clip], same precision.
- The weight travels exactly; the number of clipped coordinates travels as small limbs so the
  server learns only the total clipped count, never a party's.

b is the smallest width for which the sum over n parties of every slot stays inside
(-2^(b-1), 2^(b-1)), so the ring sum never wraps and decodes to the exact integer sum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

WEIGHT_FRAC_BITS = 8  # the weight slot is round(w * 256): sample counts are exact
MAX_BITS = 62  # stored in uint64 with headroom for the signed decode

UniformSource = Callable[[int], bytes]  # CSPRNG bytes for the stochastic-rounding dither


def ring_dtype(bits: int) -> np.dtype:
    """uint32 when it holds Z_{2^b}: arithmetic mod 2^32 then reduces correctly mod 2^b."""
    return np.dtype(np.uint32) if bits <= 32 else np.dtype(np.uint64)


def clip(x: np.ndarray, bound: float) -> tuple[np.ndarray, int]:
    """(x clipped to [-bound, bound] as float64, number of coordinates that were clipped)."""
    x64 = np.asarray(x, dtype=np.float64)  # (m,)
    clipped = int(np.count_nonzero(np.abs(x64) > bound))
    return np.clip(x64, -bound, bound), clipped


def uniforms(source: UniformSource, count: int) -> np.ndarray:
    """(count,) float64 in [0, 1) with 32 random bits each (bias <= 2^-32 per coordinate)."""
    raw = source(4 * count)
    if len(raw) != 4 * count:
        raise ValueError("uniform source returned the wrong number of bytes")
    return np.frombuffer(raw, dtype="<u4").astype(np.float64) * (1.0 / 2**32)


def stochastic_round(x: np.ndarray, u: np.ndarray, bound: int) -> np.ndarray:
    """floor(x + u): E = x for u ~ U[0,1). Clamped to [-bound, bound] because float64 rounding of
    x + u may step one past an integer bound when |x| is large."""
    q = np.floor(x + u)
    return np.clip(q, -bound, bound).astype(np.int64)


def to_ring(q: np.ndarray, bits: int) -> np.ndarray:
    """Signed int64 -> two's complement in Z_{2^b}, stored as ring_dtype(bits)."""
    mask = np.uint64((1 << bits) - 1)
    return (q.astype(np.int64).view(np.uint64) & mask).astype(ring_dtype(bits))


def from_ring(r: np.ndarray, bits: int) -> np.ndarray:
    """Z_{2^b} -> signed int64 in [-2^(b-1), 2^(b-1))."""
    if not 1 <= bits <= MAX_BITS:
        raise ValueError(f"bits={bits} outside [1, {MAX_BITS}]")
    r64 = r.astype(np.uint64) & np.uint64((1 << bits) - 1)
    signed = r64.astype(np.int64)
    signed[r64 >= np.uint64(1 << (bits - 1))] -= np.int64(1 << bits)
    return signed


CHUNK = 1 << 17  # coordinates per pass: 1 MiB float64 scratch (2.2x faster than 1 << 20 at 8.4M), no fresh full-length arrays


def quantize_into(
    out: np.ndarray,
    x: np.ndarray,
    bound: float,
    scale: float,
    limit: int,
    uniform: UniformSource,
    bits: int,
) -> int:
    """out[:] = to_ring(stochastic_round(clip(x, bound) * scale), bits); returns the clipped count.

    The same computation as clip -> stochastic_round -> to_ring, done in place chunk by chunk:
    allocating several fresh float64 arrays of the full length dominated the time otherwise.
    Uniforms are drawn in order, 4 bytes per coordinate, as `uniforms(uniform, len(x))` would.
    """
    if out.shape != x.shape or out.dtype != ring_dtype(bits):
        raise ValueError("output must match the input shape and the ring dtype")
    n = x.size
    buf = np.empty(min(n, CHUNK), dtype=np.float64)
    ints = np.empty(min(n, CHUNK), dtype=np.int64)
    mask = np.uint64((1 << bits) - 1)
    clipped = 0
    for start in range(0, n, CHUNK):
        stop = min(n, start + CHUNK)
        f, q = buf[: stop - start], ints[: stop - start]
        np.copyto(f, x[start:stop], casting="same_kind")
        if not np.isfinite(f).all():
            raise ValueError("input has non-finite values")
        clipped += int(np.count_nonzero(f > bound)) + int(np.count_nonzero(f < -bound))
        np.clip(f, -bound, bound, out=f)
        f *= scale
        f += uniforms(uniform, stop - start)
        np.floor(f, out=f)
        np.clip(f, -limit, limit, out=f)  # float64 rounding of x + u may step one past the bound
        np.copyto(q, f, casting="unsafe")
        np.bitwise_and(q.view(np.uint64), mask, out=q.view(np.uint64))
        np.copyto(out[start:stop], q.view(np.uint64), casting="unsafe")
    return clipped


def packed_size(count: int, bits: int) -> int:
    return (count * bits + 7) // 8


# From 8 to 56 bits, value k of a group of 8 (8b bits = b bytes) fits one little-endian 64-bit
# window starting at byte floor(k b / 8) of its group, shifted by (k b) mod 8. So the same layout is
# written with 8 vectorised passes, one per k, over unaligned uint64 views with a stride of b bytes
# straight into the output buffer (windows of one k never overlap since b >= 8; those of different
# k are OR-ed one after another, and bits past a value are zero), instead of 64 passes over a
# transposed copy.
_WINDOW_BITS = range(8, 57)


def _windows(buf: np.ndarray, groups: int, bits: int, offset: int) -> np.ndarray:
    """(G,) little-endian uint64 views at byte `offset` of each b-byte group of buf (unaligned)."""
    return np.ndarray((groups,), dtype="<u8", buffer=buf, offset=offset, strides=(bits,))


def _pack_windows(values: np.ndarray, bits: int) -> bytes:
    count = int(values.size)
    groups = -(-count // 8)
    if count % 8:
        values = np.concatenate([values, np.zeros(groups * 8 - count, dtype=values.dtype)])
    v = values.reshape(groups, 8)  # (G, 8)
    buf = np.zeros(groups * bits + 8, dtype=np.uint8)  # + 8: room for the last window
    for k in range(8):
        offset, shift = divmod(k * bits, 8)
        w = _windows(buf, groups, bits, offset)
        w |= v[:, k].astype(np.uint64) << np.uint64(shift)
    return buf[: packed_size(count, bits)].tobytes()


def _unpack_windows(data: bytes, bits: int, count: int) -> np.ndarray:
    groups = -(-count // 8)
    buf = np.zeros(groups * bits + 8, dtype=np.uint8)
    buf[: len(data)] = np.frombuffer(data, dtype=np.uint8)
    mask = np.uint64((1 << bits) - 1)
    out = np.empty((groups, 8), dtype=np.uint64)  # (G, 8)
    for k in range(8):
        offset, shift = divmod(k * bits, 8)
        out[:, k] = (_windows(buf, groups, bits, offset) >> np.uint64(shift)) & mask
    return out.reshape(-1)[:count].copy() if groups * 8 != count else out.reshape(-1)


def pack_bits(values: np.ndarray, bits: int) -> bytes:
    """(L,) unsigned < 2^b -> ceil(L*b/8) bytes, value j at bits [j*b, (j+1)*b) little-endian.

    Groups of 64 values fill exactly b 64-bit words, so the shifts are the same for every group:
    one vectorised pass per position within the group (64 passes), never a loop over coordinates.
    """
    if not 1 <= bits <= 64:
        raise ValueError(f"bits={bits} outside [1, 64]")
    count = int(values.size)
    if bits in (8, 16, 32, 64):
        return np.ascontiguousarray(values, dtype=f"<u{bits // 8}").tobytes()
    if bits == 1:  # numpy's own bit packer writes this layout (and zero padding), without 64 passes
        return np.packbits(np.asarray(values).astype(bool), bitorder="little").tobytes()
    if bits in _WINDOW_BITS:
        return _pack_windows(values, bits)
    groups = -(-count // 64)
    padded = np.zeros(groups * 64, dtype=np.uint64)
    padded[:count] = values
    cols = padded.reshape(groups, 64).T.copy()  # (64, G): position-in-group major
    words = np.zeros((bits, groups), dtype=np.uint64)  # (b, G)
    for j in range(64):
        word, shift = divmod(j * bits, 64)
        words[word] |= cols[j] << np.uint64(shift)
        if shift + bits > 64:
            words[word + 1] |= cols[j] >> np.uint64(64 - shift)
    return words.T.astype("<u8").tobytes()[: packed_size(count, bits)]


def unpack_bits(data: bytes, bits: int, count: int) -> np.ndarray:
    """Inverse of pack_bits -> (count,) uint64. Raises ValueError on a wrong length or on nonzero
    padding bits (only the canonical encoding is accepted)."""
    if not 1 <= bits <= 64:
        raise ValueError(f"bits={bits} outside [1, 64]")
    if len(data) != packed_size(count, bits):
        raise ValueError("packed vector has the wrong length")
    spare = 8 * len(data) - count * bits
    if spare and data[-1] >> (8 - spare):
        raise ValueError("packed vector has nonzero padding")
    if bits in (8, 16, 32, 64):
        return np.frombuffer(data, dtype=f"<u{bits // 8}").astype(np.uint64)
    if bits == 1:
        return np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=count, bitorder="little").astype(np.uint64)
    if bits in _WINDOW_BITS:
        return _unpack_windows(data, bits, count)
    groups = -(-count // 64)
    buf = np.zeros(groups * bits * 8, dtype=np.uint8)
    buf[: len(data)] = np.frombuffer(data, dtype=np.uint8)
    words = buf.view("<u8").reshape(groups, bits).T.copy()  # (b, G)
    mask = np.uint64((1 << bits) - 1)
    cols = np.empty((64, groups), dtype=np.uint64)  # (64, G)
    for j in range(64):
        word, shift = divmod(j * bits, 64)
        v = words[word] >> np.uint64(shift)
        if shift + bits > 64:
            v |= words[word + 1] << np.uint64(64 - shift)
        cols[j] = v & mask
    return cols.T.reshape(-1)[:count].copy()


# The ring wire layout of masked uploads. Rings of 33..40 bits (n ~ 1000 parties at 16 precision
# bits) travel as two planes: the low 32 bits of every value as little-endian uint32 words, then the
# high b - 32 bits packed with pack_bits. Same size as one b-bit packing (4L + ceil(L(b-32)/8) bytes),
# but the masker writes its two planes as they are (no 64-bit recombination, no 33-bit windows,
# 4x cheaper), and the server reads them back with one cast. Other widths: pack_bits itself.
SPLIT_BITS = range(33, 41)


def pack_planes(low: np.ndarray, high: np.ndarray, bits: int) -> bytes:
    """(L,) uint32 low words and (L,) high parts (only their low b - 32 bits count) -> wire bytes."""
    if bits not in SPLIT_BITS or low.shape != high.shape:
        raise ValueError("pack_planes needs 33..40 bits and two planes of one length")
    r = bits - 32
    top = np.bitwise_and(high, high.dtype.type((1 << r) - 1))
    return np.ascontiguousarray(low, dtype="<u4").tobytes() + pack_bits(top, r)


def pack_ring(values: np.ndarray, bits: int) -> bytes:
    """(L,) unsigned < 2^b -> the ring wire layout (see SPLIT_BITS); packed_size(L, b) bytes."""
    if bits not in SPLIT_BITS:
        return pack_bits(values, bits)
    v = np.asarray(values, dtype=np.uint64)
    return pack_planes(v.astype(np.uint32), v >> np.uint64(32), bits)


def unpack_ring(data: bytes, bits: int, count: int) -> np.ndarray:
    """Inverse of pack_ring -> (count,) uint64; ValueError on a wrong length or nonzero padding."""
    if bits not in SPLIT_BITS:
        return unpack_bits(data, bits, count)
    if len(data) != packed_size(count, bits):
        raise ValueError("packed vector has the wrong length")
    high = unpack_bits(data[4 * count :], bits - 32, count)  # checks the padding bits
    out = np.frombuffer(data, dtype="<u4", count=count).astype(np.uint64)
    out |= high << np.uint64(32)
    return out


@dataclass(frozen=True)
class DecodedSum:
    delta_sum: np.ndarray  # (m,) float64: sum_i w_i * clip(delta_i)
    control_sum: np.ndarray | None  # (m,) float64
    total_weight: float
    clipped: int  # delta coordinates clipped, summed over parties
    control_clipped: int


@dataclass(frozen=True)
class FixedPointCodec:
    """How one round maps updates to Z_{2^b}; built by `for_round` from public round facts."""

    vector_len: int
    has_control: bool
    clip: float
    control_clip: float
    precision_bits: int
    max_weight: int
    bits: int
    limb_bits: int  # width of one clipped-count limb
    count_limbs: int  # limbs per clipped count

    @classmethod
    def for_round(
        cls,
        n_parties: int,
        vector_len: int,
        has_control: bool,
        max_weight: int,
        clip: float,
        control_clip: float,
        precision_bits: int,
    ) -> FixedPointCodec:
        if n_parties < 1 or vector_len < 1 or max_weight < 1:
            raise ValueError("n_parties, vector_len and max_weight must be >= 1")
        if not (math.isfinite(clip) and clip > 0 and math.isfinite(control_clip) and control_clip > 0):
            raise ValueError("clip and control_clip must be finite and > 0")
        if not 2 <= precision_bits <= 40:
            raise ValueError(f"precision_bits={precision_bits} outside [2, 40]")
        per_party = max(max_weight << precision_bits, max_weight << WEIGHT_FRAC_BITS, 1 << precision_bits)
        bits = (n_parties * per_party).bit_length() + 1  # 2 * n * per_party < 2^b
        if bits > MAX_BITS:
            raise ValueError(
                f"precision_bits={precision_bits} with {n_parties} parties and max_weight={max_weight} "
                f"needs {bits} bits > {MAX_BITS}"
            )
        limb_bits = bits - 1 - n_parties.bit_length()  # n * (2^limb - 1) < 2^(b-1)
        count_limbs = -(-vector_len.bit_length() // limb_bits)
        return cls(vector_len, has_control, clip, control_clip, precision_bits, max_weight, bits,
                   limb_bits, count_limbs)

    @property
    def length(self) -> int:
        """Slots in the encoded vector."""
        m = self.vector_len
        return m * (2 if self.has_control else 1) + 1 + 2 * self.count_limbs

    @property
    def step(self) -> float:
        """One ring unit of the delta slots, in delta units (the per-party rounding error bound)."""
        return self.clip / 2**self.precision_bits

    @property
    def control_step(self) -> float:
        return self.control_clip / 2**self.precision_bits

    def error_bound(self, n_parties: int) -> float:
        """Max |decoded - exact| per delta coordinate for inputs inside the clip range and weights
        that are multiples of 2^-WEIGHT_FRAC_BITS: each party's stochastic rounding errs < 1 unit."""
        return n_parties * self.step

    def quantize_weight(self, weight: float) -> int:
        """round(w * 2^WEIGHT_FRAC_BITS); weights below 2^-WEIGHT_FRAC_BITS count as that."""
        if not (0 < weight <= self.max_weight):
            raise ValueError(f"weight {weight} outside (0, {self.max_weight}]")
        return max(1, round(weight * 2**WEIGHT_FRAC_BITS))

    def encode(
        self,
        delta: np.ndarray,
        control: np.ndarray | None,
        weight: float,
        uniform: UniformSource,
    ) -> np.ndarray:
        """-> (length,) ring_dtype(bits) integers. `uniform` is the CSPRNG dither source."""
        m = self.vector_len
        if delta.shape != (m,) or (control is None) == self.has_control:
            raise ValueError("input does not match the codec's layout")
        if control is not None and control.shape != (m,):
            raise ValueError("control has the wrong shape")
        w_q = self.quantize_weight(weight)
        scale = (w_q / 2**WEIGHT_FRAC_BITS) * 2**self.precision_bits / self.clip
        out = np.empty(self.length, dtype=ring_dtype(self.bits))  # (length,)
        clipped = quantize_into(out[:m], delta, self.clip, scale, self.max_weight << self.precision_bits,
                                uniform, self.bits)
        control_clipped, off = 0, m
        if control is not None:
            cscale = 2**self.precision_bits / self.control_clip
            control_clipped = quantize_into(out[m : 2 * m], control, self.control_clip, cscale,
                                            1 << self.precision_bits, uniform, self.bits)
            off = 2 * m
        tail = np.concatenate([[w_q], self._limbs(clipped), self._limbs(control_clipped)])
        out[off:] = to_ring(tail.astype(np.int64), self.bits)
        return out

    def decode_sum(self, total: np.ndarray) -> DecodedSum:
        """(length,) ring sum -> floats. Exact integer sum first; scaling is the only float step."""
        if total.shape != (self.length,):
            raise ValueError("sum has the wrong length")
        s = from_ring(total, self.bits)  # (length,) int64
        m = self.vector_len
        delta = s[:m].astype(np.float64) * self.step
        control = s[m : 2 * m].astype(np.float64) * self.control_step if self.has_control else None
        off = m * (2 if self.has_control else 1)
        weight = float(s[off]) / 2**WEIGHT_FRAC_BITS
        limbs = s[off + 1 :]
        return DecodedSum(delta, control, weight, self._unlimb(limbs[: self.count_limbs]),
                          self._unlimb(limbs[self.count_limbs :]))

    def _limbs(self, value: int) -> np.ndarray:
        out = np.empty(self.count_limbs, dtype=np.int64)  # (count_limbs,) little-endian limbs
        for i in range(self.count_limbs):
            out[i] = (value >> (i * self.limb_bits)) & ((1 << self.limb_bits) - 1)
        return out

    def _unlimb(self, limbs: np.ndarray) -> int:
        return sum(int(v) << (i * self.limb_bits) for i, v in enumerate(limbs))
