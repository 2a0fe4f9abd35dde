"""Who is in a round, derived by every participant from public inputs: never the server's choice.

A round's invited set is `select_parties` (the configured sampling rule) seeded by the federation's
roster: a digest of every party's key fingerprint (keys each party made on its own machine), and the
round number. Attempts of one round invite the same set, so aborting an attempt does not re-draw it.
A party builds the same `Membership` from its own kit and refuses a round context that does not
carry exactly that set, or that is smaller than `min_round_size`; the server can only report invited
parties as dropped. The protocol then fixes its graph and threshold from the invited set (secagg's
plan), not from whoever is left, and `RoundContext.min_contributors` (set by each side from its own
config, never read off the wire) is the floor on the surviving contributor set.

Fingerprints: SHA-256 over a party's TLS public key and its protocol public key, shown to people as
eight groups of four hex digits (128 bits, as SSH shows host keys), compared out of band and pinned.

Commit-then-reveal (against roster grinding): keys are cheap, so a party that makes its keys last
could try keys until the derived selections suit it. Each party therefore also draws a random
32-byte contribution at keygen and hands in only its commitment (`seed_commitment`); it reveals the
contribution after the operator has published every member's key digest and commitment, and the
seed (`federation_seed`) mixes every reveal. No one knows an honest party's contribution before the
roster is fixed, so no key or contribution chosen then steers the seed (securefed/deploy/roster.py
checks reveals, commitments and the roster each party revealed against).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Literal, Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from securefed.protocols.base import RoundContext

_FINGERPRINT = b"securefed/key-fingerprint/v1\x00"
_ROSTER = b"securefed/roster/v1\x00"
_COMMIT = b"securefed/seed-commit/v1\x00"
_BEACON = b"securefed/federation-seed/v1\x00"
_RANK = b"securefed/select/sha256-rank/v1\x00"
# The selection rules by name. "sha256-rank" (the default): a fixed function of public bytes that any
# implementation reproduces. "numpy-choice": numpy's Generator.choice, whose streams numpy does not
# promise to keep across releases, so two parties with different numpy could derive different sets
# and refuse every round; it stays for runs and federations made before rules had names.
SelectionRule = Literal["sha256-rank", "numpy-choice"]
LEGACY_RULE: SelectionRule = "numpy-choice"  # what a stored config without `rule` was run with
FINGERPRINT_HEX = 32  # 128 bits shown: a second preimage costs 2^128 hashes


def _framed(prefix: bytes, parts: Iterable[bytes]) -> bytes:
    """SHA-256 of `prefix` then each part length-prefixed (8 bytes, big-endian), so no two
    sequences of parts hash the same input."""
    h = hashlib.sha256(prefix)
    for part in parts:
        h.update(len(part).to_bytes(8, "big") + part)
    return h.digest()


def _pairs(hex_by_party: Mapping[str, str]) -> Iterator[bytes]:
    """party id, then its hex value as bytes, for every party in sorted order."""
    for pid in sorted(hex_by_party):
        yield pid.encode()
        yield bytes.fromhex(hex_by_party[pid])


class SamplingConfig(BaseModel):
    """Which parties train in a round: all (default), a count, or a fraction (seeded per round)."""

    model_config = ConfigDict(extra="forbid")

    count: int | None = Field(None, ge=1)
    fraction: float | None = Field(None, gt=0, le=1)
    # Under secagg/he: the fewest parties a round may invite, and the fewest whose inputs its sum may
    # hold; a party refuses smaller rounds (securefed.membership). 3: one colluder beside you still
    # faces the sum of two honest inputs. Raise it to (colluders you fear) + the crowd you want.
    min_round_size: int = Field(3, ge=1)
    rule: SelectionRule = "sha256-rank"  # how the invited set is derived (see SelectionRule)

    @model_validator(mode="after")
    def _one(self) -> "SamplingConfig":
        if self.count is not None and self.fraction is not None:
            raise ValueError("give sampling.count or sampling.fraction, not both")
        return self

    def per_round(self, n: int) -> int:
        """How many of n parties a round selects: all, `count`, or round(fraction * n) (at least 1;
        round, not ceil: 0.25 of 10 is 2). The one rule selection and the config checks share."""
        return parties_per_round(n, self.count, self.fraction)

    @classmethod
    def from_stored(cls, raw: Mapping[str, Any]) -> "SamplingConfig":
        """A `sampling` section read back from something written earlier (federation.json, a run's
        config): no `rule` there means the rule in force when it was written, not today's default."""
        if not isinstance(raw, Mapping):
            return cls.model_validate(raw)  # refused, as any malformed section is
        return cls.model_validate({"rule": LEGACY_RULE, **raw})  # raw may set its own rule


def first_error(e: ValidationError) -> str:
    """A validation error as one line: 'setting: what is wrong' (the first one; no setting: the reason)."""
    err = e.errors()[0]
    where = ".".join(map(str, err["loc"]))
    return f"{where}: {err['msg']}" if where else err["msg"]


def parties_per_round(n: int, count: int | None, fraction: float | None) -> int:
    return n if count is None and fraction is None else (count if count is not None else max(1, round(fraction * n)))


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from labelled parts, stable across runs and platforms (for selection, data order
    and dropout, not for anything secret: keys and masks use the OS CSPRNG)."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def select_parties(
    party_ids: Sequence[str], round_index: int, seed: int, count: int | None = None, fraction: float | None = None,
    rule: SelectionRule = "sha256-rank",
) -> tuple[str, ...]:
    """The sorted parties invited to this round; all of them unless count/fraction is given.

    sha256-rank: each party's score is SHA-256 over the label, then the seed, the round (both in
    decimal) and the party id (UTF-8), each framed by its 8-byte length; the k lowest scores are
    invited. A uniform k-subset (scores are independent and uniform if SHA-256 is), the same on every
    machine and in any language (tests/vectors/selection_sha256_rank.json), whatever the order the
    roster lists parties in."""
    n = len(party_ids)
    k = parties_per_round(n, count, fraction)
    if not 1 <= k <= n:
        raise ValueError(f"cannot select {k} of {n} parties")
    if k == n:
        return tuple(sorted(party_ids))
    if rule == "sha256-rank":
        head = (str(seed).encode(), str(round_index).encode())  # decimal: any int, no width to agree on
        ranked = sorted(party_ids, key=lambda pid: (_framed(_RANK, (*head, pid.encode())), pid))
        return tuple(sorted(ranked[:k]))
    if rule == "numpy-choice":
        rng = np.random.default_rng(derive_seed(seed, "select", round_index))
        return tuple(sorted(party_ids[i] for i in rng.choice(n, size=k, replace=False)))
    raise ValueError(f"unknown selection rule {rule!r} (sha256-rank or numpy-choice)")


def round_floor(cfg: Any) -> int:
    """cfg: a RootConfig. The smallest round (invited and surviving) it allows: sampling.min_round_size under
    secagg/he; 1 under plain, whose server sees every update anyway."""
    return 1 if cfg.aggregation.protocol == "plain" else cfg.sampling.min_round_size


class MembershipRefused(ValueError):
    """A round context whose membership this party did not derive itself (one line, no secrets)."""


def key_sha256(tls_public_der: bytes, protocol_name: str, protocol_public_sha256: str) -> str:
    """A party's key digest (what its fingerprint shows): its TLS public key (SubjectPublicKeyInfo
    DER) and the SHA-256 of its protocol public key, which federation.json also lists so that every
    party can check the keys its protocol uses against the roster (deploy.roster)."""
    return _framed(_FINGERPRINT, (tls_public_der, protocol_name.encode(), bytes.fromhex(protocol_public_sha256))).hex()


def short_fingerprint(digest_hex: str) -> str:
    """What a person reads aloud: 'a1b2 c3d4 ...' (the first 128 bits of the digest)."""
    d = digest_hex.lower()[:FINGERPRINT_HEX]
    return " ".join(d[i:i + 4] for i in range(0, len(d), 4))


def normalise_fingerprint(text: str) -> str:
    """A fingerprint as typed or pasted (spaces, colons, case) -> its 32 lowercase hex digits."""
    d = "".join(c for c in text.lower() if c not in " :-\t")
    if len(d) != FINGERPRINT_HEX or any(c not in "0123456789abcdef" for c in d):
        raise ValueError(f"not a key fingerprint: {text.strip()[:60]!r} (expected {FINGERPRINT_HEX} hex digits)")
    return d


def roster_digest(keys: Mapping[str, str]) -> bytes:
    """SHA-256 over the sorted (party id, key digest) pairs: the public seed of every selection."""
    return _framed(_ROSTER, _pairs(keys))


def seed_commitment(party_id: str, contribution_hex: str) -> str:
    """SHA-256 commitment (hex) to a party's 32-byte seed contribution, bound to its id."""
    return _framed(_COMMIT, (party_id.encode(), bytes.fromhex(contribution_hex))).hex()


def federation_seed(keys: Mapping[str, str], reveals: Mapping[str, str] | None = None) -> bytes:
    """32 public bytes every selection and graph of a deployment derives from: the roster digest,
    mixed with every party's revealed contribution (None: a roster provisioned before
    commit-reveal, the digest alone)."""
    digest = roster_digest(keys)
    if reveals is None:
        return digest
    return _framed(_BEACON + digest, _pairs(reveals))


@dataclass(frozen=True)
class Membership:
    """The rule every participant applies to a round: who is invited and how few may take part."""

    party_ids: tuple[str, ...]  # the roster, sorted
    seed: int  # derived from public inputs (roster digest in a deployment, `seed` in a simulation)
    count: int | None = None
    fraction: float | None = None
    min_round_size: int = 1
    roster_seed: bytes = b""  # deployment: federation_seed, handed to the protocol in the context
    rule: SelectionRule = "sha256-rank"

    @classmethod
    def from_roster(cls, keys: Mapping[str, str], count: int | None, fraction: float | None,
                    min_round_size: int, reveals: Mapping[str, str] | None = None,
                    rule: SelectionRule = "sha256-rank") -> Membership:
        seed = federation_seed(keys, reveals)
        return cls(tuple(sorted(keys)), derive_seed("membership", seed.hex()), count, fraction, min_round_size, seed,
                   rule)

    def invited(self, round_index: int) -> tuple[str, ...]:
        return select_parties(self.party_ids, round_index, self.seed, self.count, self.fraction, self.rule)

    def check(self, ctx: RoundContext) -> RoundContext:
        """The context this party may run a session for: exactly the derived invited set, at least
        min_round_size of it, and this party's own floor on the contributors and roster seed. Raises
        MembershipRefused (one line) otherwise."""
        want = self.invited(ctx.round)
        if ctx.party_ids != want:
            extra, missing = len(set(ctx.party_ids) - set(want)), len(set(want) - set(ctx.party_ids))
            raise MembershipRefused(f"round {ctx.round}: the server's set is not the derived invited set "
                                    f"({extra} added, {missing} left out of {len(want)})")
        if len(want) < self.min_round_size:
            raise MembershipRefused(f"round {ctx.round}: {len(want)} invited, below min_round_size="
                                    f"{self.min_round_size}")
        return dataclasses.replace(ctx, min_contributors=max(ctx.min_contributors, self.min_round_size),
                                   roster_seed=self.roster_seed)

