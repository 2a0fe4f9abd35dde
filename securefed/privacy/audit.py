"""Checking the reported epsilon from outside: an independent accountant, and an empirical lower bound.

- `independent_epsilon`: the epsilon of a spend history recomputed with Google's dp-accounting (its
  RDP accountant, or its PLD accountant where securefed used PRV), not with Opacus. Skellam spends are
  recomputed by a different computation from the accountant's bound: where the L2 sensitivity is
  small enough to enumerate (B^2 <= EXACT_MAX_L2SQ), the exact Renyi divergence of the discrete
  Skellam mechanism (pmf by summation over the integers, worst integer shift vector within the L2/L1
  bounds by an exact knapsack), at fractional and integer orders (exact divergences hold at every
  order); otherwise the paper's statement in terms of the total Poisson rate (Agarwal, Kairouz & Liu
  2021, Theorem 3.5: noise Sk(mu, mu) of variance 2 mu) at the integer orders it is proven for. Both
  converted by dp-accounting, a dev dependency (`pip install securefed[dev]`).
- `audit_reference_epsilon`: the epsilon a one-run audit's lower bound is held against, for the
  neighbouring relation its canaries span (user-level: replace one party's update, doubled sensitivity).
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


# Orders of the exact computation: Renyi divergences of the actual distributions hold at every real
# order, so a fractional grid is fine here (unlike the Skellam bound, proven at integer orders only).
EXACT_ORDERS = np.asarray([*(1 + x / 10 for x in range(1, 100)), *range(11, 257)], dtype=np.float64)
EXACT_MAX_L2SQ = 256  # the exact worst case enumerates integer shift vectors of squared norm <= this


def _skellam_log_pmf(mu: float, kmax: int) -> np.ndarray:
    """log P[Sk(mu, mu) = k] for |k| <= kmax (index k + kmax): e^{-2 mu} I_|k|(2 mu).

    I_k for large k underflows any direct formula, so the ratios r_k = I_{k+1}(x) / I_k(x) come from
    the backward recurrence r_{k-1} = 1 / (2k/x + r_k) (Miller's algorithm: stable downwards, started
    well past kmax), and log I_k = log I_0 + sum_{j<k} log r_j."""
    from scipy.special import ive

    x = 2.0 * mu
    start = kmax + 64 + int(4 * math.sqrt(x + 1))
    r = np.zeros(start + 1)
    for k in range(start, 0, -1):
        r[k - 1] = 1.0 / (2.0 * k / x + r[k])
    half = math.log(ive(0, x)) + np.concatenate([[0.0], np.cumsum(np.log(r[:kmax]))])  # log p(0..kmax)
    return np.concatenate([half[:0:-1], half])


def skellam_divergence(orders: np.ndarray, mu: float, shift: int) -> np.ndarray:
    """Exact D_alpha(Sk(mu, mu) + shift || Sk(mu, mu)) at each order, by summation over the integers
    (the 1-D Skellam mechanism with total Poisson rate mu per side, variance 2 mu). Symmetric noise:
    the divergence of -shift, and of the reverse pair, is the same."""
    orders = np.asarray(orders, dtype=np.float64)
    shift = abs(int(shift))
    if shift == 0:
        return np.zeros_like(orders)
    sd = math.sqrt(2 * mu)
    kmax = int(orders.max() * shift + 40 * sd + 64)
    while True:  # widen until the summand's ends are negligible at every order
        lp = _skellam_log_pmf(mu, kmax + shift)
        p = lp[shift:-shift]  # log p(k), |k| <= kmax
        q = lp[: p.size]  # log p(k - shift)
        terms = orders[:, None] * q[None, :] + (1 - orders[:, None]) * p[None, :]
        top = terms.max(axis=1)
        if np.all(np.maximum(terms[:, 0], terms[:, -1]) < top - 60):
            break
        kmax *= 2
    log_sum = top + np.log(np.exp(terms - top[:, None]).sum(axis=1))
    return log_sum / (orders - 1)


def skellam_exact_rdp(orders: np.ndarray, variance: float, l2: float, l1: float) -> np.ndarray:
    """The exact RDP of the multi-dimensional Skellam mechanism (independent Sk(var/2, var/2) per
    coordinate) over every integer shift vector v with ||v||_2 <= l2 and ||v||_1 <= l1, the set the
    Agarwal-Kairouz-Liu bound covers: max over v of sum_i D_alpha(shift v_i), the coordinates being
    independent. An unbounded knapsack over squared norm and L1 norm; small l2 only."""
    orders = np.asarray(orders, dtype=np.float64)
    cap = int(math.floor(l2 * l2 + 1e-9))
    if cap > EXACT_MAX_L2SQ:
        raise ValueError(f"exact Skellam RDP enumerates shift vectors up to squared norm {EXACT_MAX_L2SQ}, "
                         f"got {l2 * l2:.4g}")
    ell = min(int(math.floor(l1 + 1e-9)), cap)  # an integer vector's L1 norm is <= its squared L2 norm
    best = np.zeros((cap + 1, ell + 1, orders.size))  # best[s, l]: most divergence within norms s, l
    gains = {k: skellam_divergence(orders, variance / 2, k) for k in range(1, math.isqrt(cap) + 1)}
    for s in range(1, cap + 1):
        best[s] = best[s - 1]
        for k, d in gains.items():
            if k * k <= s and k <= ell:
                best[s, k:] = np.maximum(best[s, k:], best[s - k * k, : ell + 1 - k] + d)
    return best[cap, ell]


def skellam_theorem_rdp(orders: np.ndarray, mu: float, l2: float, l1: float) -> np.ndarray:
    """Agarwal, Kairouz & Liu 2021, Theorem 3.5 in the paper's own terms (noise Sk(mu, mu), variance
    2 mu): alpha l2^2/(4 mu) + min(((2 alpha - 1) l2^2 + 6 l1)/(16 mu^2), 3 l1/(4 mu)), integer alpha."""
    a = np.asarray(orders, dtype=np.float64)
    if np.any(a != np.floor(a)) or np.any(a < 2):
        raise ValueError("the theorem holds at integer orders >= 2")
    return a * l2 * l2 / (4 * mu) + np.minimum(((2 * a - 1) * l2 * l2 + 6 * l1) / (16 * mu * mu), 3 * l1 / (4 * mu))


def _skellam_epsilon(history: Sequence[Spend], delta: float) -> tuple[float, str]:
    """(epsilon, how): exact by summation when every spend is small enough to enumerate its worst
    shift vector, else the theorem at integer orders (own code, dp-accounting's conversion)."""
    from dp_accounting.rdp import rdp_privacy_accountant as rdp

    exact = all(s.l2_units**2 <= EXACT_MAX_L2SQ for s in history)
    orders = EXACT_ORDERS if exact else np.asarray([o for o in rdp.DEFAULT_RDP_ORDERS if o == int(o) and o >= 2],
                                                   dtype=np.float64)
    total = np.zeros_like(orders)
    for s in history:
        variance = (s.noise_multiplier * s.l2_units) ** 2
        per = (skellam_exact_rdp(orders, variance, s.l2_units, s.l1_units) if exact
               else skellam_theorem_rdp(orders, variance / 2, s.l2_units, s.l1_units))
        total += s.steps * per
    eps, _ = rdp.compute_epsilon(orders, total, delta)
    return float(eps), ("exact" if exact else "theorem")


def independent_epsilon(history: Sequence[Spend], delta: float, accountant: str = "rdp") -> float:
    """epsilon of `history` by dp-accounting (RDP, or PLD for accountant 'prv')."""
    spends = [s for s in history if s.steps > 0]
    trivial = trivial_epsilon(spends)
    if trivial is not None:
        return trivial
    if any(s.skellam for s in spends):
        if not all(s.skellam for s in spends):
            raise ValueError("a history mixes Skellam and Gaussian spends")
        return _skellam_epsilon(spends, delta)[0]
    from dp_accounting import pld, rdp

    acc = pld.PLDAccountant(value_discretization_interval=1e-3) if accountant == "prv" else rdp.RdpAccountant()
    for s in spends:
        acc.compose(_dp_event(s), s.steps)
    return float(acc.get_epsilon(delta))


def _replace_one(s: Spend) -> Spend:
    """The spend as seen by a canary that may change a party's whole contribution: two clipped updates
    differ by up to twice the clip, so the sensitivity doubles at the same noise (z halves; Skellam:
    L2 and L1 sensitivities double)."""
    if s.skellam:
        return Spend(s.noise_multiplier / 2, 1.0, s.steps, 2 * s.l2_units, 2 * s.l1_units)
    return Spend(s.noise_multiplier / 2, s.sample_rate, s.steps)


def audit_reference_epsilon(history: Sequence[Spend], delta: float, accountant: str, unit: str,
                            records: int = 1) -> tuple[float | None, str]:
    """The epsilon a one-run audit's lower bound must be held against, and the neighbouring relation
    it is for. The audit's canaries are records added to one party's data or not:

    - unit "record" (example-level DP-SGD; add/remove one record): the reported epsilon, for one
      record per canary (records = 1); a canary of `records` copies is a group, not computed (None).
    - unit "user" (user-level DP; add/remove one party, sensitivity C): adding a canary to a party that
      takes part changes that party's clipped update from u to u', ||u - u'|| <= 2C, which is a
      replace-one neighbour: the epsilon at doubled sensitivity. At q = 1 that is the same mechanism with
      z / 2; under Poisson selection (q < 1) replace-one is two add/remove steps, so (eps, delta) group
      privacy of 2: 2 eps_1 at delta = (1 + e^eps_1) delta_1."""
    from securefed.privacy.accounting import epsilon

    if unit == "record":
        if records != 1:
            return None, f"group of {records} records per canary (group epsilon not computed)"
        return epsilon(history, delta, accountant), "add/remove one record (the reported epsilon)"
    if unit != "user":
        raise ValueError(f"unit must be 'record' or 'user', got {unit!r}")
    relation = "replace one party's clipped update (||u - u'|| <= 2C): epsilon at doubled sensitivity"
    if all(s.skellam or s.sample_rate == 1 for s in history):
        return epsilon([_replace_one(s) for s in history], delta, accountant), relation
    d1 = delta / 2
    for _ in range(50):  # fixed point of (1 + e^eps_1(d1)) d1 = delta; d1 only shrinks, so it stays valid
        e1 = epsilon(history, d1, accountant)
        nxt = delta / (1 + math.exp(e1))
        if nxt >= d1 * (1 - 1e-6):
            break
        d1 = nxt
    return 2 * e1, relation + " (Poisson selection: group privacy of two add/remove steps)"


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
