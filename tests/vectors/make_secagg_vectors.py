"""How tests/vectors/secagg_*.json were produced (run once, then committed):

    .venv/bin/python tests/vectors/make_secagg_vectors.py

The tests never call this: they recompute each value with the library and compare against the
committed JSON, so a change in any primitive, label, framing or encoding shows up as a failure.
All inputs are fixed byte strings (no randomness), written out in the JSON next to the outputs.
Regenerate only for a deliberate, versioned format change.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from securefed.protocols.encoding import FixedPointCodec, pack_bits
from securefed.protocols.secagg import graph, shamir
from securefed.protocols.secagg.primitives import (
    commit,
    expand_mask,
    keystream,
    pairwise_seed,
    round_salt,
    share_key,
    x25519_private,
    x25519_public_bytes,
)

OUT = Path(__file__).parent


def fixed_bytes(label: str, n: int) -> bytes:
    """Deterministic test bytes: SHA-256 in counter mode over a label (not a secret, not random)."""
    out = b""
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(f"{label}/{counter}".encode()).digest()
        counter += 1
    return out[:n]


def prg() -> dict:
    key = fixed_bytes("prg-key", 32)
    return {
        "key": key.hex(),
        "keystream_64": keystream(key, 64).hex(),
        "mask_bits27_len10": [int(v) for v in expand_mask(key, 10, 27)],
        "mask_bits40_len6": [int(v) for v in expand_mask(key, 6, 40)],
    }


def kdf() -> dict:
    a_raw, b_raw = fixed_bytes("x25519-a", 32), fixed_bytes("x25519-b", 32)
    a, b = x25519_private(a_raw), x25519_private(b_raw)
    salt = round_salt("fed-kat", 7)
    return {
        "federation_id": "fed-kat",
        "round": 7,
        "round_salt": salt.hex(),
        "sk_a": a_raw.hex(),
        "sk_b": b_raw.hex(),
        "pk_a": x25519_public_bytes(a).hex(),
        "pk_b": x25519_public_bytes(b).hex(),
        "idx_a": 2,
        "idx_b": 5,
        "pairwise_seed": pairwise_seed(a, x25519_public_bytes(b), salt, 2, 5).hex(),
        "share_key_a_to_b": share_key(a, x25519_public_bytes(b), salt, 2, 5).hex(),
        "share_key_b_to_a": share_key(b, x25519_public_bytes(a), salt, 5, 2).hex(),
        "graph_seed": graph.graph_seed(salt).hex(),
        "graph_n12_k4": [sorted(s) for s in graph.neighbours(12, 4, graph.graph_seed(salt))],
        "commit_of_sk_a": commit(a_raw, salt).hex(),
    }


def shamir_vectors() -> dict:
    secret = shamir.secret_to_int(fixed_bytes("shamir-secret", 32))
    coefficients = [int.from_bytes(fixed_bytes(f"shamir-c{i}", 66), "big") % shamir.PRIME for i in range(2)]
    xs = [1, 2, 3, 7, 11]
    shares = shamir.split_with_coefficients(secret, coefficients, xs)
    return {
        "prime": "2^521-1",
        "threshold": 3,
        "secret": hex(secret),
        "coefficients": [hex(c) for c in coefficients],
        "xs": xs,
        "shares": {str(x): shamir.encode_share(y).hex() for x, y in shares.items()},
    }


def encoding() -> dict:
    codec = FixedPointCodec.for_round(
        n_parties=4, vector_len=6, has_control=True, max_weight=10, clip=0.5, control_clip=0.25, precision_bits=8
    )
    delta = [0.1, -0.2, 0.5, -0.75, 0.0, 0.333]
    control = [0.01, -0.3, 0.2, 0.0, -0.125, 0.0625]
    dither = fixed_bytes("dither", 48)
    stream = iter([dither[:24], dither[24:]])
    ring = codec.encode(np.array(delta, np.float32), np.array(control, np.float32), 3.0, lambda n: next(stream))
    return {
        "codec": {"n_parties": 4, "vector_len": 6, "has_control": True, "max_weight": 10, "clip": 0.5,
                  "control_clip": 0.25, "precision_bits": 8},
        "bits": codec.bits,
        "delta": delta,
        "control": control,
        "weight": 3.0,
        "dither": dither.hex(),
        "ring": [int(v) for v in ring],
        "packed": pack_bits(ring, codec.bits).hex(),
    }


def main() -> None:
    for name, build in [("prg", prg), ("kdf", kdf), ("shamir", shamir_vectors), ("encoding", encoding)]:
        path = OUT / f"secagg_{name}.json"
        path.write_text(json.dumps(build(), indent=1) + "\n")
        print("wrote", path)


if __name__ == "__main__":
    main()
