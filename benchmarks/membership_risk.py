"""How likely a derived (not chosen) round surrounds an honest party with colluders under SecAgg+.

An honest party is *surrounded* in a round when at least t of its k neighbours collude: they then
hold t shares of both its secrets and can unmask its update alone. With the invited set and the ring
order derived from public inputs (securefed.membership, secagg.graph), a party's k neighbours are a
uniform k-subset of the other n - 1 invited parties, so the colluding count is hypergeometric:

    p = P[X >= t],  X ~ Hypergeom(N = n - 1, K = c n colluders, draws = k)       (exact, per party and round)
    target over R rounds:       1 - (1 - p)^R                                    (exact: rounds are independent)
    any honest party, R rounds: between that and min(1, E)                       (union bound)
    E = R (1 - c) n p: expected surrounded (party, round) pairs                  (exact, linearity)

k and t are secagg's defaults for an n-party round (SecAggConfig().resolve(n)). Usage:

    python benchmarks/membership_risk.py [--n 100 1000] [--c 0.1 0.2 0.3] [--rounds 100 1000]
"""

from __future__ import annotations

import argparse
from math import comb


def tail(n_others: int, colluders: int, k: int, t: int) -> float:
    """P[X >= t] for X ~ Hypergeom(n_others, colluders, k), exactly (integers, then one division)."""
    num = sum(comb(colluders, x) * comb(n_others - colluders, k - x) for x in range(t, min(k, colluders) + 1))
    return num / comb(n_others, k)


def rows(ns: list[int], cs: list[float], rounds: list[int]) -> list[dict]:
    from securefed.protocols.secagg import SecAggConfig

    out = []
    for n in ns:
        _, k, t = SecAggConfig(graph="sparse").resolve(n)
        for c in cs:
            colluders = round(c * n)
            p = tail(n - 1, colluders, k, t)
            for r in rounds:
                target = 1 - (1 - p) ** r
                out.append({"n": n, "k": k, "t": t, "c": c, "R": r, "p_round": p, "target": target,
                            "expected": r * (n - colluders) * p,
                            "any_upper": min(1.0, r * (n - colluders) * p)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--c", type=float, nargs="+", default=[0.1, 0.2, 0.3])
    ap.add_argument("--rounds", type=int, nargs="+", default=[100, 1000])
    a = ap.parse_args()
    print("| n | k | t | c | R | p (one party, one round) | target over R | E (pairs) | any honest party over R (<=) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for x in rows(a.n, a.c, a.rounds):
        print(f"| {x['n']} | {x['k']} | {x['t']} | {x['c']} | {x['R']} | {x['p_round']:.2e} | {x['target']:.2e} "
              f"| {x['expected']:.2e} | {x['any_upper']:.2e} |")


if __name__ == "__main__":
    main()
