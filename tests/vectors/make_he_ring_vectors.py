"""How tests/vectors/he_ring.json was produced (run once, then committed):

    .venv/bin/python tests/vectors/make_he_ring_vectors.py

Known answers for the threshold `he` ring layer (protocols/he/ring.py, rlwe.py) at the protocol's
parameters (N = 8192, the 7 primes): the NTT roots, the NTT of a fixed polynomial, a negacyclic
product, and an encryption / partial decryption / decode with a fixed byte stream. The tests
recompute each value and compare; SEAL cross-checks the conventions in test_he_ring.py.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from securefed.protocols.he import rlwe
from securefed.protocols.he.ring import _root_of_unity

OUT = Path(__file__).parent / "he_ring.json"


class FixedStream:
    """SHA-256 counter stream over a label: deterministic test bytes, not randomness."""

    def __init__(self, label: str) -> None:
        self.label, self.i = label, 0

    def __call__(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(f"{self.label}/{self.i}".encode()).digest()
            self.i += 1
        return out[:n]


def h(x: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x, dtype="<u8").tobytes()).hexdigest()


def compute() -> dict:
    ring = rlwe.ring_for()
    i = np.arange(ring.n, dtype=np.int64)
    x = ring.from_int64((i * i + 7) % 1000003)  # (L, N)
    y = ring.from_int64((i % 5) - 2)
    xy = ring.intt(ring.mul(ring.ntt(x), ring.ntt(y)))
    rng = FixedStream("he-ring-kat")
    a = rlwe.crs(ring, b"kat-label")
    s, b = rlwe.keygen_share(ring, a, rng)
    values = ((i * 7919) % 2001 - 1000).astype(np.int64)  # (N,) signed 11-bit values
    msg = rlwe.encode_message(ring, values, 12, 2, 80)
    c0, c1 = rlwe.encrypt(ring, a, b, msg, rng)
    d = rlwe.partial_decrypt(ring, c1, s, 40, rng)
    decoded = rlwe.decode_message(ring, ring.add(c0, d), 12, 2, 80, 2.0**78)
    return {
        "n": ring.n, "primes": list(ring.primes),
        "psi": [_root_of_unity(p, 2 * ring.n) for p in ring.primes],
        "ntt_x_first8": [int(v) for v in ring.ntt(x)[0, :8]],
        "ntt_x_sha256": h(ring.ntt(x)),
        "product_sha256": h(xy),
        "b_sha256": h(b), "c0_sha256": h(c0), "c1_sha256": h(c1), "partial_sha256": h(d),
        "decoded_first8": [int(v) for v in decoded[:8]],
    }


if __name__ == "__main__":
    OUT.write_text(json.dumps(compute(), indent=1) + "\n")
    print(f"wrote {OUT}")
