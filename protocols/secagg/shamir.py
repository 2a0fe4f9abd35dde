"""Shamir t-of-k secret sharing over GF(p), p = 2^521 - 1 (a Mersenne prime above any 256-bit
secret, so a key is one field element). Written once, small, with known-answer tests.

A share is (x, y) with x = the holder's 1-based index in the round (public, never 0) and
y = f(x), f of degree t - 1 with f(0) = secret. Any t shares give f(0) by Lagrange interpolation;
fewer reveal nothing about it.
"""

from __future__ import annotations

import itertools
from typing import Callable, Iterable, Mapping, Sequence

from securefed.protocols.base import ProtocolError
from securefed.protocols.secagg.primitives import Rng, draw

PRIME = 2**521 - 1
SHARE_BYTES = 66  # ceil(521 / 8)
SECRET_BYTES = 32


def secret_to_int(secret: bytes) -> int:
    if len(secret) != SECRET_BYTES:
        raise ValueError("secret must be 32 bytes")
    return int.from_bytes(secret, "big")


def int_to_secret(value: int) -> bytes:
    """Raises ProtocolError if the reconstruction is not a 256-bit value (a bad share set)."""
    if not 0 <= value < 2 ** (8 * SECRET_BYTES):
        raise ProtocolError("reconstruction failed")
    return value.to_bytes(SECRET_BYTES, "big")


def random_coefficients(rng: Rng, count: int) -> list[int]:
    """Uniform field elements by rejection (a 521-bit draw is >= p only when it equals p)."""
    out: list[int] = []
    while len(out) < count:
        v = int.from_bytes(draw(rng, SHARE_BYTES), "big") & PRIME
        if v < PRIME:
            out.append(v)
    return out


def split_with_coefficients(secret: int, coefficients: Sequence[int], xs: Iterable[int]) -> dict[int, int]:
    """f(x) = secret + c1 x + ... + c_{t-1} x^{t-1} at each x (Horner). The deterministic core."""
    if not 0 <= secret < PRIME or any(not 0 <= c < PRIME for c in coefficients):
        raise ValueError("secret and coefficients must be field elements")
    poly = [secret, *coefficients]
    shares: dict[int, int] = {}
    for x in xs:
        if not 0 < x < PRIME:
            raise ValueError("share x must be a nonzero field element")
        y = 0
        for c in reversed(poly):
            y = (y * x + c) % PRIME
        shares[x] = y
    return shares


def split(secret: int, threshold: int, xs: Sequence[int], rng: Rng) -> dict[int, int]:
    if not 1 <= threshold <= len(xs):
        raise ValueError(f"threshold={threshold} must be in [1, {len(xs)}]")
    if len(set(xs)) != len(xs):
        raise ValueError("share xs must be distinct")
    return split_with_coefficients(secret, random_coefficients(rng, threshold - 1), xs)


def recover(shares: Mapping[int, int], threshold: int) -> int:
    """f(0) from the `threshold` shares with the smallest x. Raises ProtocolError if too few.
    Consistency of the result is the caller's to check (against a commitment or a public key)."""
    if len(shares) < threshold:
        raise ProtocolError("not enough shares")
    points = sorted(shares.items())[:threshold]
    secret = 0
    for i, (xi, yi) in enumerate(points):
        num, den = 1, 1
        for j, (xj, _) in enumerate(points):
            if j != i:
                num = num * xj % PRIME  # Lagrange basis at 0: prod x_j / (x_j - x_i)
                den = den * (xj - xi) % PRIME
        secret = (secret + yi * num * pow(den, -1, PRIME)) % PRIME
    return secret


MAX_DECODE_TRIES = 4096  # interpolations one robust recovery may spend before giving up


def recover_verified(shares: Mapping[int, int], threshold: int, accept: Callable[[int], bool]) -> int:
    """f(0) from some `threshold` of `shares` that `accept` (a check against a commitment or public
    key) takes, trying subsets that leave out 0, 1, 2, ... shares in turn. So a few bad shares (a
    lying holder) cost a few extra interpolations instead of the round: with e bad shares among
    m >= t + e, a good subset is reached after at most sum_{r<=e} C(t + r, r) tries. Raises
    ProtocolError when no subset within MAX_DECODE_TRIES is accepted."""
    points = sorted(shares.items())
    if len(points) < threshold:
        raise ProtocolError("not enough shares")
    tried: set[tuple[int, ...]] = set()
    for r in range(len(points) - threshold + 1):
        for left_out in itertools.combinations(range(threshold + r), r):
            keep = tuple(i for i in range(threshold + r) if i not in left_out)
            if keep in tried:
                continue
            tried.add(keep)
            if len(tried) > MAX_DECODE_TRIES:
                raise ProtocolError("reconstruction failed")
            value = recover(dict(points[i] for i in keep), threshold)
            if accept(value):
                return value
    raise ProtocolError("reconstruction failed")


def encode_share(y: int) -> bytes:
    return y.to_bytes(SHARE_BYTES, "big")


def decode_share(data: bytes) -> int:
    if len(data) != SHARE_BYTES:
        raise ProtocolError("invalid message")
    y = int.from_bytes(data, "big")
    if y >= PRIME:
        raise ProtocolError("invalid message")
    return y
