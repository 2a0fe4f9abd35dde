"""Checking the reported epsilon from outside: an independent accountant, and an empirical lower bound.

- `independent_epsilon`: the epsilon of a spend history recomputed with Google's dp-accounting (its
  RDP accountant, or its PLD accountant where securefed used PRV), not with Opacus. Skellam spends are
  recomputed from the paper's statement in terms of the total Poisson rate (Agarwal, Kairouz & Liu
  2021, Theorem 3.5: noise Sk(mu, mu) of variance 2 mu) at dp-accounting's RDP orders, converted by
  dp-accounting. dp-accounting is a dev dependency (`pip install securefed[dev]`).
- `ledger_from_rows`: a run's per-party spends, replayed from metrics.jsonl / the deployment ledger.
- `one_run_lower_bound`: Steinke, Nasr & Jagielski 2023 ("Privacy Auditing with One (1) Training
  Run"): m canaries, each included independently with probability 1/2; the auditor guesses "in" for
  the k best-scored and "out" for the k worst-scored. Under (eps, delta)-DP the number of correct
  guesses is dominated by Binomial(r, e^eps / (1 + e^eps)) up to a delta term, so a count too high
  for that law at confidence 1 - p rules eps out. The bound is valid for any score; weak attacks give
  weak (small) bounds, never wrong ones.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from scipy import stats

from securefed.privacy.accounting import Spend, trivial_epsilon


def _dp_event(s: Spend):
    import dp_accounting

    event = dp_accounting.GaussianDpEvent(s.noise_multiplier)
    if s.sample_rate < 1:
        event = dp_accounting.PoissonSampledDpEvent(s.sample_rate, event)
    return event


def _skellam_epsilon(history: Sequence[Spend], delta: float) -> float:
    from dp_accounting.rdp import rdp_privacy_accountant as rdp

    orders = np.asarray(rdp.DEFAULT_RDP_ORDERS, dtype=np.float64)
    total = np.zeros_like(orders)
    for s in history:
        mu = (s.noise_multiplier * s.l2_units) ** 2 / 2  # total Poisson rate of the sum's Sk(mu, mu)
        l2sq, l1 = s.l2_units**2, s.l1_units
        per = orders * l2sq / (4 * mu) + np.minimum(((2 * orders - 1) * l2sq + 6 * l1) / (16 * mu * mu),
                                                   3 * l1 / (4 * mu))
        total += s.steps * per
    eps, _ = rdp.compute_epsilon(orders, total, delta)
    return float(eps)


def independent_epsilon(history: Sequence[Spend], delta: float, accountant: str = "rdp") -> float:
    """epsilon of `history` by dp-accounting (RDP, or PLD for accountant 'prv')."""
    spends = [s for s in history if s.steps > 0]
    trivial = trivial_epsilon(spends)
    if trivial is not None:
        return trivial
    if any(s.skellam for s in spends):
        if not all(s.skellam for s in spends):
            raise ValueError("a history mixes Skellam and Gaussian spends")
        return _skellam_epsilon(spends, delta)
    from dp_accounting import pld, rdp

    acc = pld.PLDAccountant(value_discretization_interval=1e-3) if accountant == "prv" else rdp.RdpAccountant()
    for s in spends:
        acc.compose(_dp_event(s), s.steps)
    return float(acc.get_epsilon(delta))


def ledger_from_rows(rows: Iterable[Mapping[str, Any]], key: str = "dp_spends") -> dict[str, list[Spend]]:
    """{party: its spends in order} from metrics rows (each row's `dp_spends` holds that round's)."""
    out: dict[str, list[Spend]] = {}
    for row in rows:
        for pid, v in (row.get(key) or {}).items():
            out.setdefault(pid, []).append(Spend.from_list(v))
    return out


def audit_p_value(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """P[>= v of r guesses correct] under (eps, delta)-DP with m canaries (Steinke et al., Thm 3.1 /
    Prop. 5.2): the Binomial(r, e^eps/(1+e^eps)) tail plus 2 m delta times the largest
    P[v - i <= Binomial < v] / i."""
    if not 0 <= v <= r <= m:
        raise ValueError("need 0 <= v <= r <= m")
    p = 1 / (1 + math.exp(-eps))
    tail = float(stats.binom.sf(v - 1, r, p))
    if delta == 0 or v == 0:
        return min(1.0, tail)
    pmf = stats.binom.pmf(np.arange(v - 1, -1, -1), r, p)  # P[Binom = v-1], P[= v-2], ..., P[= 0]
    worst = float(np.max(np.cumsum(pmf) / np.arange(1, v + 1)))
    return min(1.0, tail + 2 * m * delta * worst)


def one_run_lower_bound(scores: Sequence[float], included: Sequence[bool], guesses_each_side: int,
                        delta: float, confidence: float = 0.95) -> dict[str, float]:
    """Empirical epsilon lower bound from canary scores (higher = more member-like).

    `guesses_each_side` (k) must be fixed before looking at the scores: choosing it from the
    outcome would need a multiple-testing correction. Returns eps_lb, r (guesses), v (correct)."""
    s, inc = np.asarray(scores, dtype=np.float64), np.asarray(included, dtype=bool)
    m = s.size
    k = min(guesses_each_side, m // 2)
    if inc.shape != (m,) or k < 1:
        raise ValueError("need one inclusion bit per score and k >= 1")
    order = np.argsort(-s, kind="stable")
    v = int(inc[order[:k]].sum() + (~inc[order[m - k:]]).sum())
    r, p_max = 2 * k, 1 - confidence
    lo, hi = 0.0, 1.0
    if audit_p_value(m, r, v, 0.0, delta) >= p_max:
        return {"eps_lb": 0.0, "r": r, "v": v}
    while audit_p_value(m, r, v, hi, delta) < p_max and hi < 100:
        hi *= 2
    for _ in range(40):  # largest eps still rejected at this confidence
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if audit_p_value(m, r, v, mid, delta) < p_max else (lo, mid)
    return {"eps_lb": lo, "r": r, "v": v}
