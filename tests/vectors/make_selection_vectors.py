"""How tests/vectors/selection_sha256_rank.json was produced (run once, then committed):

    .venv/bin/python tests/vectors/make_selection_vectors.py

It restates the sha256-rank selection rule from its specification with hashlib alone (it imports
nothing from securefed), so the committed answers check the library against the text of the rule,
not against itself. Rule: a party's score is SHA-256 of the label, then each of (seed in decimal,
round in decimal, party id), all UTF-8, each preceded by its length as 8 big-endian bytes; the k
parties with the lowest scores (ties: by id) are invited; the answer lists them sorted by id.
Regenerate only for a deliberate, versioned change of the rule.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

LABEL = b"securefed/select/sha256-rank/v1\x00"


def score(seed: int, round_index: int, party: str) -> bytes:
    h = hashlib.sha256(LABEL)
    for part in (str(seed).encode(), str(round_index).encode(), party.encode()):
        h.update(len(part).to_bytes(8, "big") + part)
    return h.digest()


def invited(parties: list[str], seed: int, round_index: int, k: int) -> list[str]:
    return sorted(sorted(parties, key=lambda p: (score(seed, round_index, p), p))[:k])


CASES = [  # (parties, seed, rounds, k)
    ([f"party-{i:02d}" for i in range(10)], 0, range(4), 3),
    ([f"party-{i:02d}" for i in range(10)], 7_361_200_443_114_857_009, range(2), 8),
    (["hospital-a", "hospital-b", "bank-c", "clinic-d", "lab-e"], -5, range(3), 2),
    ([f"p{i}" for i in range(100)], 2**63 - 1, [0, 1, 10_000], 10),
    (["ü-party", "α", "b"], 1, [3], 1),
]


def main() -> None:
    vectors = []
    for parties, seed, rounds, k in CASES:
        for r in rounds:
            vectors.append({"parties": parties, "seed": seed, "round": r, "count": k,
                            "score_of_first_party": score(seed, r, parties[0]).hex(),
                            "invited": invited(parties, seed, r, k)})
    out = Path(__file__).parent / "selection_sha256_rank.json"
    out.write_text(json.dumps({"label": LABEL.decode("latin-1"), "vectors": vectors}, indent=1) + "\n")
    print(f"wrote {len(vectors)} vectors to {out}")


if __name__ == "__main__":
    main()
