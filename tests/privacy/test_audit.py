"""Audit: every reported epsilon recomputed by an independent accountant (Google's dp-accounting, RDP or
PLD; Skellam from the paper's statement) from the spends the run wrote to its metrics, for every
mechanism x accountant x protocol, through the real engine hooks and the real protocols. Plus the
cases measured in issue #12, each now agreeing with the independent figure.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from securefed.aggregate import FlatLayout
from securefed.config import load_config
from securefed.errors import ConfigError
from securefed.privacy.accounting import Spend, check_budget, epsilon, solve_noise_multiplier
from securefed.privacy.audit import independent_epsilon, ledger_from_rows, one_run_lower_bound
from securefed.privacy.engine import build_engine
from securefed.protocols import registry
from securefed.protocols.base import RoundContext
from securefed.protocols.driver import run_round
from securefed.simulation.steps import party_names, select_parties

pytest.importorskip("dp_accounting")
DIM = 256


def _root(protocol: str, mechanism: str, parties=6, count=2, rounds=8, extra=(), **privacy):
    sets = [f"parties={parties}", f"rounds={rounds}", f"sampling.count={count}", f"aggregation.protocol={protocol}",
            f"privacy.mechanism={mechanism}", "aggregation.secagg.clip=1.0", "aggregation.he.preset='n4096'",
            "sampling.min_round_size=2", *extra]  # accounting, not membership: rounds of 2 as before
    sets += [f"privacy.{k}={v!r}" if isinstance(v, str) else f"privacy.{k}={str(v).lower() if isinstance(v, bool) else v}"
             for k, v in privacy.items()]
    return load_config(None, sets)


def _drive(root, dim=DIM, drop_to=None, seed=0):
    """Run the engine's round hooks over the real protocol for root.rounds rounds; the metrics rows.
    drop_to(n_selected) -> how many of the selected contribute (the rest drop after encoding)."""
    ids = party_names(root.parties)
    sizes = {p: 40 + 10 * i for i, p in enumerate(ids)}
    eng = build_engine(root, ids, sizes, dim)
    proto = registry.create(root.aggregation.protocol, root.aggregation.section())
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(root.rounds):
        chosen = select_parties(ids, r, root.seed, root.sampling.count, root.sampling.fraction)
        admitted = eng.admit_round(r, chosen)
        if eng.cfg.mechanism == "example":
            for p in admitted:
                s = eng.example_spend(p)
                eng.record_example(p, s.noise_multiplier, s.sample_rate, s.steps)
            rows.append(eng.close_round())
            continue
        if not admitted:  # a stopped round, or an amplified draw of nobody (the server releases noise only)
            layout = FlatLayout.of({"w": torch.zeros(dim)})
            step = eng.release_empty("server", _MeanStep(), layout)
            assert (step != "server") == eng.amplified  # amplified: a noise-only step happened
            rows.append(eng.close_round())
            continue
        if len(admitted) < {"secagg": 3, "he": 2}.get(root.aggregation.protocol, 1):
            rows.append(eng.close_round())  # the protocol cannot run this round: nothing released or spent
            continue
        keep = admitted[: drop_to(len(admitted))] if drop_to else admitted
        inputs = {p: eng.party_input(rng.normal(size=dim).astype(np.float32), None, 1.0, 64) for p in admitted}
        ctx = RoundContext("audit", r, admitted, dim, False, 64)
        server_mat, party_mat = proto.provision(admitted)
        # the rest go silent after sharing their keys, before their masked input: the sum is of `keep` only
        drop_at = {p: "secagg/masked-input" for p in admitted if p not in keep}
        vsum, _ = run_round(proto, ctx, inputs, server_mat, party_mat, drop_at)
        assert vsum.contributors == tuple(keep)
        eng.finish_round(vsum)
        rows.append(eng.close_round())
    return eng, rows


class _MeanStep:
    def server_update(self, server, aggregate):
        return aggregate.mean_delta()


def _assert_agrees(eng, rows, key="dp_spends", reported="dp_epsilon"):
    ledgers = ledger_from_rows(rows, key)
    assert ledgers, "no spends recorded"
    theirs: dict[tuple, float] = {}  # parties with equal histories are recomputed once
    for pid, spends in ledgers.items():
        ours = rows[-1][reported][pid] if reported == "dp_epsilon" else epsilon(spends, eng.cfg.target_delta)
        h = tuple(spends)
        if h not in theirs:
            theirs[h] = independent_epsilon(spends, eng.cfg.target_delta, eng.cfg.accountant)
        assert ours == pytest.approx(theirs[h], rel=0.01), (pid, ours, theirs[h])


# Example-level DP-SGD is accounted on the party from its own DP-SGD steps: the protocol never enters its
# accounting, so one protocol covers it. User-level accounting depends on the protocol (encoding, floors).
CELLS = [("example", a, "plain") for a in ("rdp", "prv")]
CELLS += [("user-central", a, p) for a in ("rdp", "prv") for p in ("plain", "secagg", "he")]
CELLS += [("user-distributed", "rdp", "secagg"), ("user-distributed", "rdp", "plain")]


@pytest.mark.parametrize("mechanism,accountant,protocol", CELLS)
def test_reported_epsilon_matches_independent_accountant(mechanism, accountant, protocol):
    extra = {"distributed_over_plain": True} if (mechanism, protocol) == ("user-distributed", "plain") else {}
    rounds = 3 if protocol == "he" else 5
    noise = {"noise_multiplier": 1.2} if mechanism == "example" else {}  # (solving 6 parties' z is slow)
    count = 5 if protocol == "he" else 4  # threshold he: a quorum of 5 of the 6 key holders signs each round
    root = _root(protocol, mechanism, parties=6, count=count, rounds=rounds, target_epsilon=6.0, accountant=accountant,
                 update_clip_norm=0.5, **extra, **noise)
    eng, rows = _drive(root)
    _assert_agrees(eng, rows)
    assert max(rows[-1]["dp_epsilon"].values()) <= 6.0
    if extra:  # what the server sees of each party: one noisy share, accounted separately and far worse
        _assert_agrees(eng, rows, key="dp_server_spends", reported="share")
        assert rows[-1]["dp_epsilon_vs_server_max"] > 2 * rows[-1]["dp_epsilon_max"]


# --- issue #12's measured cases -------------------------------------------------------------------------


def test_issue_case_secret_poisson_selection_charges_every_party_every_round():
    """6 parties, 2 per round, 8 rounds, target 4: z = 1.528; the old code charged each party only for the
    rounds it joined (2.31-3.29); amplified accounting over all 8 rounds gives 4.00 for every party."""
    root = _root("plain", "user-central", target_epsilon=4.0, sampling_amplification=True)
    eng, rows = _drive(root)
    q = 2 / 6
    assert eng.user_noise() == pytest.approx(solve_noise_multiplier(4.0, 1e-5, q, 8), rel=1e-12)
    assert eng.user_noise() == pytest.approx(1.528, abs=0.001)
    ledgers = ledger_from_rows(rows)
    assert sorted(ledgers) == list(party_names(6)) and all(len(s) == 8 for s in ledgers.values())
    assert all(s.sample_rate == pytest.approx(q) for v in ledgers.values() for s in v)
    for pid in ledgers:
        assert rows[-1]["dp_epsilon"][pid] == pytest.approx(4.00, abs=0.01)
    _assert_agrees(eng, rows)
    # what the old accounting reported for a party that joined 2..5 rounds: well under the truth
    assert epsilon([Spend(eng.user_noise(), q, 5)], 1e-5) < 3.3
    assert [r["dp_drawn"] for r in rows] == [6] * 8
    # the draw is Poisson: over 8 rounds the number chosen is not a constant 2 (P[all 2] = 0.33^8)
    assert len({len(r["dp_spends"]) for r in rows}) == 1  # every party charged every round...
    # ...and the selection itself comes from the OS CSPRNG: two engines on the same config disagree
    draws = [tuple(build_engine(root, party_names(6), {}, DIM).admit_round(0, ())) for _ in range(20)]
    assert len(set(draws)) > 1


@pytest.mark.parametrize("rounds_joined,expected", [(2, 4.33), (3, 5.46), (5, 7.37)])
def test_issue_case_public_selection_is_q1_on_rounds_joined(rounds_joined, expected):
    """Seeded fixed-size selection is public: at the old z = 1.528 a party that joins k rounds is at
    4.33 / 5.46 / 7.37 (not amplified). The engine charges exactly that."""
    root = _root("plain", "user-central", noise_multiplier=1.528, rounds=8)
    eng, rows = _drive(root)
    ledgers = ledger_from_rows(rows)
    assert all(s.sample_rate == 1.0 for v in ledgers.values() for s in v)
    joined = {p: len(v) for p, v in ledgers.items()}
    for pid, k in joined.items():
        assert rows[-1]["dp_epsilon"][pid] == pytest.approx(independent_epsilon([Spend(1.528, 1.0, k)], 1e-5), rel=0.01)
    assert independent_epsilon([Spend(1.528, 1.0, rounds_joined)], 1e-5) == pytest.approx(expected, abs=0.01)
    _assert_agrees(eng, rows)


def test_public_selection_with_target_stays_within_it():
    root = _root("plain", "user-central", target_epsilon=4.0)  # z solved for the most rounds any party joins
    eng, rows = _drive(root)
    eps = rows[-1]["dp_epsilon"]
    assert max(eps.values()) <= 4.0 and max(eps.values()) > 3.9
    _assert_agrees(eng, rows)


def test_issue_case_distributed_over_plain_refused_then_reported_per_share():
    with pytest.raises(ConfigError, match="privacy.distributed_over_plain"):
        _root("plain", "user-distributed", noise_multiplier=1.0)
    root = _root("plain", "user-distributed", parties=6, count=6, rounds=2, noise_multiplier=1.0,
                 distributed_over_plain=True, dropout_tolerance=0.0, update_clip_norm=0.5)
    eng, rows = _drive(root)
    share_z = rows[-1]["dp_server_spends"]["party-00"][0]
    assert share_z == pytest.approx(1.0 / math.sqrt(6), rel=1e-6)  # one share: 1/n of the variance
    assert rows[-1]["dp_epsilon_vs_server_max"] == pytest.approx(
        independent_epsilon(ledger_from_rows(rows, "dp_server_spends")["party-00"], 1e-5), rel=0.01)
    assert rows[-1]["dp_epsilon_vs_server_max"] > 2.5 * rows[-1]["dp_epsilon_max"]


def test_budget_check_charges_the_worst_case_the_protocol_still_releases():
    """Attack: the server lets parties drop after they shared keys, down to the fewest contributors
    secagg still unmasks (t + 1 with a complete graph), so the sum carries fewer noise shares than the
    n_min the noise was sized for. The old check used the planned z (n_min survivors) and let rounds
    run that the honest accounting afterwards put past the target. Now the check assumes secagg's
    threshold t (a lower bound of what it releases) and no party ever exceeds its target."""
    root = _root("secagg", "user-distributed", parties=6, count=6, rounds=6, noise_multiplier=1.0,
                 target_epsilon=7.7, update_clip_norm=0.5)
    t = root.aggregation.secagg.resolve(6)[2]
    eng, rows = _drive(root, drop_to=lambda n: t + 1)
    plan = eng.plan_for(6)
    assert plan.n_min == 6 and t + 1 < 6
    assert all(row["dp_epsilon_max"] <= 7.7 for row in rows)
    assert any(row.get("dp_stopped") for row in rows)
    # the old check (planned z at n_min) admits the next round, which the dropouts push past 7.7
    spent = ledger_from_rows(rows)["party-00"]
    old = check_budget(spent, plan.spend(plan.n_min), 7.7, 1e-5)
    assert not old.exceeds and epsilon([*spent, plan.spend(t + 1)], 1e-5) > 7.7
    _assert_agrees(eng, rows)


def test_collusion_figure_is_the_noise_the_coalition_cannot_remove():
    root = _root("secagg", "user-distributed", parties=6, count=6, rounds=1, noise_multiplier=1.0,
                 update_clip_norm=0.5, dropout_tolerance=0.0)
    eng, _ = _drive(root)
    plan = eng.plan_for(6)
    for c in (1, 2, 3, 5):
        assert plan.collusion_noise_multiplier(6, c) == pytest.approx(math.sqrt((6 - c) / 6), rel=1e-9)


# --- sensitivity after encoding -----------------------------------------------------------------------------


def test_user_central_secagg_encoding_keeps_norm_within_clip_at_large_d():
    """Attack: the codec's stochastic rounding of a clipped update adds up to sqrt(d) * step to its norm
    (d = 2^22, C = 0.1, step = 2^-16: up to +31%); typical draws already exceed C. The party now rounds
    onto the codec's grid itself, conditionally, so the encoded norm is <= C by construction."""
    import os

    from securefed.protocols.encoding import FixedPointCodec

    d, clip = 1 << 22, 0.1
    root = _root("secagg", "user-central", noise_multiplier=1.0, update_clip_norm=clip, rounds=1, count=3)
    eng = build_engine(root, party_names(6), {}, d)
    codec = FixedPointCodec.for_round(1, d, False, 64, 1.0, 1.0, 16)
    x = np.random.default_rng(0).normal(size=d)

    def encoded_norm(v):
        return float(np.linalg.norm(codec.decode_sum(codec.encode(v, None, 1.0, os.urandom)).delta_sum))

    naive = x * (clip / np.linalg.norm(x))  # the old path: clip to C, let the codec round
    assert encoded_norm(naive.astype(np.float32)) > clip
    safe = eng.party_input(x, None, 1.0).delta
    assert eng.safe_encoding().mode == "grid" and eng.safe_encoding().inner_clip > 0.98 * clip
    for _ in range(2):
        assert encoded_norm(safe) <= clip


def test_user_central_threshold_he_rounds_onto_secagg_grid():
    """Threshold he encodes with secagg's codec, so the party pre-rounds onto the same grid."""
    root = _root("he", "user-central", count=6, noise_multiplier=1.0, update_clip_norm=0.5, rounds=1)
    assert root.aggregation.he.mode == "threshold"
    eng = build_engine(root, party_names(6), {}, 4096)
    enc = eng.safe_encoding(64)
    assert enc.mode == "grid" and enc.unit == root.aggregation.he.clip / 2 ** root.aggregation.he.precision_bits
    delta = eng.party_input(np.random.default_rng(1).normal(size=4096), None, 1.0, 64).delta.astype(np.float64)
    assert np.linalg.norm(delta) <= 0.5
    assert np.all(np.abs(delta / enc.unit - np.rint(delta / enc.unit)) < 1e-6)  # on the grid already


def test_user_central_he_margin_keeps_norm_within_clip():
    root = _root("he", "user-central", noise_multiplier=1.0, update_clip_norm=0.5, rounds=1,
                 extra=("aggregation.he.mode='single_key'",))
    eng = build_engine(root, party_names(6), {}, 4096)
    enc = eng.safe_encoding(64)
    assert enc.mode == "margin"
    step = 64 * root.aggregation.he.clip / (2 ** (root.aggregation.he.value_bits - 1) - 1)  # he's quantum
    worst = eng.party_input(np.full(4096, 1.0), None, 1.0, 64).delta.astype(np.float64)
    worst += np.sign(worst) * step / 2  # every coordinate rounded the wrong way by half a quantum
    assert np.linalg.norm(worst) <= 0.5 * (1 + 1e-9)
    with pytest.raises(ValueError, match="update_clip_norm"):
        build_engine(_root("he", "user-central", noise_multiplier=1.0, update_clip_norm=0.01, rounds=1,
                           extra=("aggregation.he.mode='single_key'",)),
                     party_names(6), {}, 1 << 20)


def test_modulus_too_small_for_clip_and_dimension():
    def eng(bits):
        root = _root("secagg", "user-distributed", noise_multiplier=1.0, update_clip_norm=0.5, rounds=1,
                     modulus_bits=bits, count=3)  # secagg rounds of 2 are refused at config time
        return build_engine(root, party_names(6), {}, 1 << 16)

    with pytest.raises(ValueError, match="privacy.modulus_bits=6 is too small"):
        eng(6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        eng(16)  # fine: no warning


def test_distributed_randomness_is_aes_ctr():
    from securefed.privacy.csprng import AesCtrUniforms, skellam
    from securefed.privacy.csprng import secure_generator

    a, b = secure_generator(), secure_generator()
    assert isinstance(a, AesCtrUniforms) and not np.array_equal(a.random(8), b.random(8))
    x = skellam(400.0, 200_000, AesCtrUniforms(b"k" * 32))
    assert abs(x.mean()) < 0.3 and x.var() == pytest.approx(800, rel=0.02)


def test_one_run_audit_bound_is_valid_and_has_power():
    rng = np.random.default_rng(0)
    inc = rng.random(2000) < 0.5
    # no signal: the bound stays 0 (it may never exceed a true epsilon of 0)
    assert one_run_lower_bound(rng.normal(size=2000), inc, 500, 1e-5)["eps_lb"] == 0.0
    # randomized response at eps = 1 (a (1, 0)-DP release): the bound is positive and below 1
    p = math.exp(1) / (1 + math.exp(1))
    flip = rng.random(2000) < p
    released = np.where(flip, inc, ~inc).astype(float) + rng.random(2000) * 1e-3
    lb = one_run_lower_bound(released, inc, 1000, 0.0)["eps_lb"]
    assert 0.5 < lb < 1.0


# --- issue #24: the epsilon a one-run audit is held against --------------------------------------------


def test_user_level_canary_spans_twice_the_sensitivity():
    # the premise: a canary can turn a party's clipped update u into u' = -u, ||u - u'|| = 2C
    from securefed.privacy.user_level import user_level_input

    u = np.ones(64, dtype=np.float32)
    a, _ = user_level_input(u, 0.5)
    b, _ = user_level_input(-u, 0.5)
    assert np.linalg.norm(a.delta - b.delta) == pytest.approx(2 * 0.5, rel=1e-6)


def test_audit_reference_for_a_user_level_cell_is_the_epsilon_at_doubled_sensitivity():
    import dp_accounting

    from securefed.privacy.audit import audit_reference_epsilon

    # the DP-audit benchmark's user-central target-8 cell: 10 parties, all in each of 3 rounds (q = 1)
    z = solve_noise_multiplier(8.0, 1e-5, 1.0, 3)
    history = [Spend(z, 1.0, 1)] * 3
    ref, relation = audit_reference_epsilon(history, 1e-5, "rdp", "user")
    acc = dp_accounting.rdp.RdpAccountant()  # independent: Gaussian of sensitivity 2 at noise z
    acc.compose(dp_accounting.GaussianDpEvent(z / 2), 3)
    assert ref == pytest.approx(acc.get_epsilon(1e-5), rel=0.01)
    assert ref == pytest.approx(18.85, abs=0.03) and "doubled sensitivity" in relation  # the issue's figure
    assert ref > 2 * epsilon(history, 1e-5)  # the reported 8 is the wrong line for this cell
    # target 2: the issue's 4.36 (dp-accounting's orders; Opacus's give 4.34)
    z2 = solve_noise_multiplier(2.0, 1e-5, 1.0, 3)
    assert audit_reference_epsilon([Spend(z2, 1.0, 3)], 1e-5, "rdp", "user")[0] == pytest.approx(4.36, abs=0.03)
    # distributed (Skellam): L2 and L1 double at the same variance
    s = Spend(1.5, 1.0, 5, 3000.0, 48000.0)
    ref_sk, _ = audit_reference_epsilon([s], 1e-5, "rdp", "user")
    assert ref_sk == pytest.approx(epsilon([Spend(0.75, 1.0, 5, 6000.0, 96000.0)], 1e-5))
    assert ref_sk > 1.8 * epsilon([s], 1e-5)
    # secret Poisson selection: group privacy of two add/remove steps, above the reported one
    amp = [Spend(1.528, 1 / 3, 8)]
    ref_amp, rel_amp = audit_reference_epsilon(amp, 1e-5, "rdp", "user")
    assert "group privacy" in rel_amp and ref_amp > 2 * epsilon(amp, 1e-5)


def test_audit_reference_for_a_record_level_cell_is_the_reported_epsilon():
    from securefed.privacy.audit import audit_reference_epsilon

    h = [Spend(1.1, 0.05, 200)]
    ref, relation = audit_reference_epsilon(h, 1e-5, "rdp", "record")
    assert ref == epsilon(h, 1e-5) and relation.startswith("add/remove one record")
    assert audit_reference_epsilon(h, 1e-5, "rdp", "record", records=32)[0] is None
