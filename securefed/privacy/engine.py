"""The thin stateful wrapper the round runner talks to: one `PrivacyEngine` per federation.

It holds each party's spend history (the only state), resolves noise multipliers once, and applies the
pure mechanisms of this package at four points of a round:

    admit_round(r, selected)   before local training: who may take part without exceeding its budget
    dp_sgd_params(pid, r)      example-level: the DP-SGD parameters for the party's local loop
    party_input(...)           after local training: user-level clipping / distributed encoding
    finish_round(vsum)         after the protocol's sum: central noise / distributed decoding
    close_round()              commit every participant's spend; epsilon per party into the metrics
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from securefed.privacy import distributed
from securefed.privacy.accounting import Spend, check_budget, epsilon, example_sample_rate, resolve_noise_multiplier
from securefed.privacy.config import PrivacyConfig
from securefed.privacy.csprng import secure_generator
from securefed.privacy.rng import poisson_sample, secure_normal, secure_uniforms
from securefed.privacy.sensitivity import SafeEncoding, is_power_of_two, weight_bound
from securefed.privacy.user_level import add_central_noise, user_level_input
from securefed.protocols.base import PartyInput, VectorSum


@dataclass(frozen=True)
class FederationFacts:
    """Public facts the engine plans with."""

    party_sizes: Mapping[str, int]  # records per party (example-level only; a deployed party knows its own)
    participations: Mapping[str, int]  # every party -> planned rounds it is selected in (selection is seeded)
    rounds: int
    parties_per_round: int
    max_steps: int
    expected_batch: int  # batch_size * grad_accum: one DP-SGD step's expected Poisson batch
    vector_len: int
    carrier_step: float  # distributed: the protocol input unit (secagg: clip / 2^precision_bits; plain: 1)
    seed: int
    accounted: tuple[str, ...]  # whose epsilon this engine reports (simulation and server: all; a party: itself)
    protocol: str = "plain"
    central_unit: float = 0.0  # user-central: the protocol's quantum in update units (0: float, plain)
    central_grid: bool = False  # ... and whether it is an exact power-of-two grid (secagg, power-of-two clip)
    # survivor_floor[n]: the fewest contributors the protocol still releases a sum of, in a round of n
    # selected (secagg: its threshold t; he: min_contributors; plain: 1). The worst case of dropouts.
    survivor_floor: tuple[int, ...] = ()
    central_weighted: bool = False  # he: the quantum is max_weight times central_unit


@dataclass
class PrivacyEngine:
    cfg: PrivacyConfig
    facts: FederationFacts
    ledger: dict[str, tuple[Spend, ...]] = field(default_factory=dict)
    _round_spends: dict[str, Spend] = field(default_factory=dict)
    _round_notes: dict[str, Any] = field(default_factory=dict)
    _plan: distributed.DistributedPlan | None = None
    _round: int = 0
    server_ledger: dict[str, tuple[Spend, ...]] = field(default_factory=dict)  # distributed: vs the server
    _server_spends: dict[str, Spend] = field(default_factory=dict)
    _pool: tuple[str, ...] = ()  # amplified: every party in this round's Poisson draw (chosen or not)
    _z: float | None = None

    # --- planning (pure given the facts) -----------------------------------------------------------

    def example_spend(self, pid: str, noise: float | None = None) -> Spend:
        f = self.facts
        q = example_sample_rate(f.expected_batch, f.party_sizes[pid])
        z = noise if noise is not None else self.example_noise(pid)
        return Spend(z, q, f.max_steps)

    def example_noise(self, pid: str) -> float:
        f, c = self.facts, self.cfg
        q = example_sample_rate(f.expected_batch, f.party_sizes[pid])
        steps = max(1, f.participations.get(pid, f.rounds)) * f.max_steps
        return resolve_noise_multiplier(c.noise_multiplier, c.target_epsilon, c.target_delta, q, steps, c.accountant)

    @property
    def amplified(self) -> bool:
        """Secret Poisson selection, accounted at q over every round (user-central only; config.py)."""
        return self.cfg.sampling_amplification and self.cfg.mechanism == "user-central"

    def public_metrics(self, metrics: Mapping[str, Any]) -> dict[str, Any]:
        """What of a round's metrics may be written. Under the secret draw only what does not depend on
        who was drawn (round, lr, names, the dp_* figures: every party is charged alike), in one fixed
        shape; the rest (counts, the drawn parties' un-noised train_loss, bytes, protocol statistics,
        timings) would put its reader at q = 1. Evaluating the released model, added after, is fine."""
        if not self.amplified:
            return dict(metrics)
        head = {k: metrics[k] for k in ("round", "algorithm", "lr") if k in metrics}
        return {**head, "protocol": self.facts.protocol, **{k: v for k, v in metrics.items() if k.startswith("dp_")}}

    def user_sample_rate(self) -> float:
        f = self.facts
        return f.parties_per_round / len(f.participations) if self.amplified else 1.0

    def user_noise(self) -> float:
        """z (noise std / sensitivity) that the *sum* must carry. Amplified: every round counts for
        every party at q (it is in each draw with probability q); otherwise only the rounds it is
        selected in, at q = 1 (the seeded selection is public). Distributed: raised until the Skellam
        bound (not just the equal-variance Gaussian) meets the target."""
        if self._z is None:
            f, c = self.facts, self.cfg
            steps = f.rounds if self.amplified else max(1, max(f.participations.values(), default=f.rounds))
            z = resolve_noise_multiplier(c.noise_multiplier, c.target_epsilon, c.target_delta,
                                         self.user_sample_rate(), steps, c.accountant)
            if c.mechanism == "user-distributed" and c.noise_multiplier is None:
                n = f.parties_per_round
                while epsilon([self._worst_spend(n, z)] * steps, c.target_delta) > c.target_epsilon:
                    z *= 1.002
            self._z = z
        return self._z

    def plan_for(self, n_selected: int, z: float | None = None, r: int = 0) -> distributed.DistributedPlan:
        from securefed.simulation.steps import derive_seed

        c = self.cfg
        return distributed.DistributedPlan.for_round(
            self.facts.vector_len, c.update_clip_norm, self.user_noise() if z is None else z, n_selected,
            c.dropout_tolerance, c.modulus_bits, c.tail_bound, c.rounding_beta, self.facts.carrier_step,
            derive_seed(self.facts.seed, "ddp-rotation", r), c.rotation)

    def _worst_spend(self, n_selected: int, z: float | None = None) -> Spend:
        """A round of n_selected's spend at the fewest contributors it can release a sum of: the worst
        case the budget check must assume (the dropout margin's n_min, or less if the protocol allows less)."""
        plan = self.plan_for(n_selected, z)
        floor = self.facts.survivor_floor
        proto = floor[n_selected] if n_selected < len(floor) else 1
        return plan.spend(max(1, min(plan.n_min, proto)))

    def planned_spend(self, pid: str, n_selected: int = 0) -> Spend:
        """The spend the budget check charges: the worst case over the dropouts the protocol allows."""
        if self.cfg.mechanism == "example":
            return self.example_spend(pid)
        if self.cfg.mechanism == "user-distributed":
            return self._worst_spend(max(1, n_selected))
        return Spend(self.user_noise(), self.user_sample_rate(), 1)

    # --- round hooks ----------------------------------------------------------------------------------

    def admit_round(self, r: int, selected: Sequence[str]) -> tuple[str, ...]:
        """Start round r: the selected parties that may take part (the others' budgets are spent and
        on_budget_exhausted="stop"), and the round's distributed plan for exactly those.

        Amplified: `selected` is ignored; every party whose budget allows it enters a Poisson draw at
        q from the OS CSPRNG (secret from whoever sees only the model), and all of them are charged."""
        self._round_spends, self._round_notes, self._plan, self._round = {}, {}, None, r
        self._server_spends, self._pool = {}, ()
        if self.amplified:
            everyone = tuple(self.facts.participations)
            self._pool = tuple(p for p in everyone if self._admit(p, r, len(everyone)))
            n = len(self._pool)
            return tuple(self._pool[i] for i in poisson_sample(n, self.user_sample_rate(), secure_uniforms(n)))
        admitted = tuple(selected)
        for _ in range(3):  # the distributed worst case depends on how many are admitted
            before = admitted
            self._round_notes = {}
            admitted = tuple(p for p in selected if self._admit(p, r, len(before)))
            if admitted == before:
                break
        if admitted and self.cfg.mechanism == "user-distributed":
            self._plan = self.plan_for(len(admitted), r=r)
        return admitted

    def _admit(self, pid: str, r: int, n_selected: int) -> bool:
        c = self.cfg
        if not c.enabled or c.target_epsilon is None:
            return True
        check = check_budget(self.ledger.get(pid, ()), self.planned_spend(pid, n_selected), c.target_epsilon,
                             c.target_delta, c.accountant)
        if not check.exceeds:
            return True
        if c.on_budget_exhausted == "warn":
            warnings.warn(f"{pid}: round {r + 1} takes epsilon to {check.epsilon_after:.3g} > target "
                          f"{c.target_epsilon}", stacklevel=2)
            self._round_notes.setdefault("dp_over_budget", []).append(pid)
            return True
        self._round_notes.setdefault("dp_stopped", []).append(pid)
        return False

    def dp_sgd_params(self, pid: str, r: int):
        from securefed.training.dp_sgd import DPSGDParams
        from securefed.simulation.steps import derive_seed

        c = self.cfg
        s = self.example_spend(pid)
        return DPSGDParams(s.noise_multiplier, c.max_grad_norm, s.sample_rate, c.grad_sample_mode, c.secure_mode,
                           derive_seed(self.facts.seed, "dp-sgd", r, pid))

    def record_example(self, pid: str, noise_multiplier: float, sample_rate: float, steps: int) -> None:
        """Example-level spend of a party that finished local training (counted even if it then drops:
        its data was touched)."""
        self._round_spends[pid] = Spend(noise_multiplier, sample_rate, steps)

    def party_input(self, delta: np.ndarray, control: np.ndarray | None, weight: float,
                    max_weight: int | None = None) -> PartyInput:
        """max_weight: the round's public weight bound (he's quantum scales with it); default: the
        bound of the known party sizes, as the simulation's runner computes it."""
        c = self.cfg
        if not c.user_level:
            return PartyInput(delta, control, float(weight))
        if c.mechanism == "user-central":
            # clipped so that the protocol's encoding keeps the norm <= C (privacy.sensitivity)
            return PartyInput(self.safe_encoding(max_weight).apply(delta, secure_generator()), None, 1.0)
        clipped, _ = user_level_input(delta, c.update_clip_norm)
        if self._plan is None:
            raise RuntimeError("admit_round was not called")
        return PartyInput(distributed.encode(self._plan, clipped.delta.astype(np.float64), secure_generator()),
                          None, 1.0)

    def safe_encoding(self, max_weight: int | None = None) -> SafeEncoding:
        f = self.facts
        unit = f.central_unit
        if f.central_weighted:
            unit *= max_weight or weight_bound(f.party_sizes.values())
        return SafeEncoding.plan(self.cfg.update_clip_norm, f.vector_len, unit, f.central_grid,
                                 self.cfg.rounding_beta)

    def finish_round(self, vsum: VectorSum) -> VectorSum:
        c = self.cfg
        n = len(vsum.contributors)
        if c.mechanism == "user-central":
            z = self.user_noise()
            if c.secure_mode or self.amplified:
                normal = secure_normal
            else:
                rng = np.random.default_rng(self._noise_seed())
                normal = lambda count, std: rng.normal(0.0, std, count)  # noqa: E731
            vsum = add_central_noise(vsum, z, c.update_clip_norm, normal)
            if self.amplified:
                # Divide by the public expected count q |pool|, not the drawn one: the count is not noised.
                vsum = dataclasses.replace(vsum, total_weight=self.user_sample_rate() * len(self._pool))
                self._round_spends = {p: Spend(z, self.user_sample_rate(), 1) for p in self._pool}
            else:
                self._round_spends = {p: Spend(z, 1.0, 1) for p in vsum.contributors}
        elif c.mechanism == "user-distributed":
            plan = self._plan
            vsum = VectorSum(distributed.decode(plan, vsum.delta_sum), None, float(n), vsum.contributors,
                             {**vsum.stats, "dp_noise_std": plan.noise_std(n), "dp_gamma": plan.gamma,
                              "dp_modulus_bits": plan.bits, "dp_under_noised": n < plan.n_min,
                              "dp_sensitivity_inflation": plan.sensitivity_inflation(),
                              **self._collusion_stats(plan, n)})
            self._round_spends = {p: plan.spend(n) for p in vsum.contributors}
            if self.facts.protocol == "plain":  # the server sees every share: one share's noise protects it
                self._server_spends = {p: plan.spend(1) for p in vsum.contributors}
        return vsum

    def release_empty(self, server: Any, algorithm: Any, layout: Any) -> Any:
        """Amplified user-central round whose Poisson draw chose nobody: the server still releases the
        noise (on a zero sum), as the subsampled Gaussian the accountant charges does. Otherwise a
        no-op (a stopped round releases nothing)."""
        if not (self.amplified and self._pool):
            return server
        from securefed.aggregate import Aggregate

        out = self.finish_round(VectorSum(np.zeros(layout.size), None, 0.0, ()))
        # Aggregate wants >= 1 contributor; no user-level algorithm reads the count (SCAFFOLD is refused).
        return algorithm.server_update(server, Aggregate(layout.unflatten(out.delta_sum), None, out.total_weight, 1))

    @staticmethod
    def _collusion_stats(plan: distributed.DistributedPlan, n: int) -> dict[str, float]:
        """z left against the server plus c colluding contributors, for a few c (docs/threat-model.md)."""
        cs = sorted({c for c in (1, 2, n // 4, n // 2, n - 1) if 1 <= c < n})
        return {f"dp_z_vs_{c}_colluders": plan.collusion_noise_multiplier(n, c) for c in cs}

    def close_round(self) -> dict[str, Any]:
        """Commit this round's spends to the parties' histories; the round's privacy metrics."""
        for p, s in self._round_spends.items():
            self.ledger[p] = (*self.ledger.get(p, ()), s)
        for p, s in self._server_spends.items():
            self.server_ledger[p] = (*self.server_ledger.get(p, ()), s)
        return self.round_metrics()

    def _noise_seed(self) -> int:
        from securefed.simulation.steps import derive_seed

        # Reproducible for experiments only; secure_mode draws from the OS CSPRNG instead.
        return derive_seed(self.facts.seed, "central-noise", self._round)

    # --- reporting / resume ---------------------------------------------------------------------------

    def epsilon_of(self, pid: str) -> float:
        return epsilon(self.ledger.get(pid, ()), self.cfg.target_delta, self.cfg.accountant)

    def round_metrics(self) -> dict[str, Any]:
        if not self.cfg.enabled:
            return {}
        eps = {p: self.epsilon_of(p) for p in self.facts.accounted}
        out: dict[str, Any] = {
            "dp_mechanism": self.cfg.mechanism, "dp_delta": self.cfg.target_delta,
            "dp_epsilon_max": max(eps.values(), default=0.0),
            "dp_epsilon": eps,
            # what to replay on resume: this round's spends (noise, rate, steps) per party
            "dp_spends": {p: s.as_list() for p, s in self._round_spends.items()},
            **self._round_notes,
        }
        if self.amplified:
            # parties that entered this round's draw (budget allowing; each charged at q), not how many
            # the draw chose: that count is secret
            out["dp_drawn"] = len(self._pool)
        if self.server_ledger or self._server_spends:
            # distributed over plain: what one share (all the server sees of a party) costs that party
            out["dp_epsilon_vs_server_max"] = max(
                epsilon(self.server_ledger.get(p, ()), self.cfg.target_delta) for p in self.facts.accounted)
            out["dp_server_spends"] = {p: s.as_list() for p, s in self._server_spends.items()}
        return out

    def restore(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Rebuild the ledger from saved metrics rows (resume)."""
        self.ledger, self.server_ledger = {}, {}
        for row in rows:
            for p, v in row.get("dp_spends", {}).items():
                self.ledger[p] = (*self.ledger.get(p, ()), Spend.from_list(v))
            for p, v in row.get("dp_server_spends", {}).items():
                self.server_ledger[p] = (*self.server_ledger.get(p, ()), Spend.from_list(v))


def build_engine(root: Any, party_ids: Sequence[str], party_sizes: Mapping[str, int], vector_len: int,
                 accounted: Sequence[str] | None = None, selection_seed: int | None = None) -> PrivacyEngine:
    """The engine for a simulation, a deployed server or a deployed party from the root config.

    party_ids: every party of the federation (selection and sampling rates depend on all of them).
    party_sizes: the record counts this side knows (simulation: all; a party: its own; the server:
    none, it never runs example-level DP-SGD). accounted: whose epsilon to report (default: all).
    selection_seed: what seeds the rounds' selections (a deployment: the roster's, securefed.membership;
    default `root.seed`), so the planned participations are the ones that will happen."""
    from securefed.simulation.steps import select_parties

    cfg: PrivacyConfig = root.privacy
    seed = root.seed if selection_seed is None else selection_seed
    selections = [select_parties(party_ids, r, seed, root.sampling.count, root.sampling.fraction, root.sampling.rule)
                  for r in range(root.rounds)]
    participations = {p: sum(p in s for s in selections) for p in party_ids}
    protocol = root.aggregation.protocol
    unit, grid, weighted = protocol_quantum(root)
    carrier = unit if protocol == "secagg" else 1.0  # secagg's quantum clip / 2^precision_bits is its input unit
    facts = FederationFacts(dict(party_sizes), participations, root.rounds, len(selections[0]),
                            root.training.max_steps, root.training.batch_size * root.training.grad_accum,
                            vector_len, carrier, root.seed, tuple(party_ids if accounted is None else accounted),
                            protocol, unit, grid, survivor_floors(root, len(party_ids)), weighted)
    engine = PrivacyEngine(cfg, facts)
    if cfg.mechanism == "user-central":
        engine.safe_encoding()  # raises now (a config error) if the protocol's quantum is too coarse
    if cfg.mechanism == "user-distributed":
        check_modulus(engine.plan_for(max(1, facts.parties_per_round)))
    return engine


MAX_INFLATION = 4.0  # refuse: rounding at this modulus would quadruple the noise the target needs
WARN_INFLATION = 1.25


def check_modulus(plan: distributed.DistributedPlan) -> None:
    """Refuse (or warn) when privacy.modulus_bits is too small for the clip and dimension: gamma then
    grows until the clipped update is a few integer units and rounding, not the update, sets the
    sensitivity gamma * B that the noise must cover (at 4-8 bits the update is rounded away)."""
    inflation = plan.sensitivity_inflation()
    if inflation <= WARN_INFLATION:
        return
    msg = (f"privacy.modulus_bits={plan.bits} is too small for update_clip_norm={plan.clip:g} at {plan.dim} "
           f"coordinates: rounding inflates the sensitivity {inflation:.2f}x (the clipped update is "
           f"{plan.clip / plan.gamma:.1f} integer units); raise privacy.modulus_bits")
    if inflation > MAX_INFLATION:
        raise ValueError(msg)
    warnings.warn(msg, stacklevel=3)


def protocol_quantum(root: Any) -> tuple[float, bool, bool]:
    """(largest per-coordinate rounding error of the protocol's encoding, whether it is an exact
    power-of-two grid the party can pre-round onto, whether it scales with max_weight)."""
    agg = root.aggregation
    # Threshold he quantizes with secagg's codec (its own clip and precision_bits), so its grid is
    # secagg's: the same exact power-of-two pre-rounding applies.
    grid = agg.secagg if agg.protocol == "secagg" else agg.he if agg.protocol == "he" and agg.he.mode == "threshold" else None
    if grid is not None:
        step = grid.clip / 2 ** grid.precision_bits
        exact = is_power_of_two(grid.clip) and root.privacy.update_clip_norm / step < 2**24
        return step, exact, False
    if agg.protocol == "he":  # single_key: rint of w * delta relative to max_weight * clip
        return agg.he.clip / (2 ** (agg.he.value_bits - 1) - 1) / 2, False, True  # rint: half a quantum
    return 0.0, False, False


def survivor_floors(root: Any, parties: int) -> tuple[int, ...]:
    """[n] -> the fewest contributors the protocol releases a sum of in a round of n selected.
    The distributed noise is sized so that the target still holds at that floor."""
    agg = root.aggregation
    out = [1]
    for n in range(1, parties + 1):
        if agg.protocol == "secagg" and n >= 3:
            out.append(agg.secagg.resolve(n)[2])
        elif agg.protocol == "he":
            out.append(min(n, agg.he.min_contributors))
        else:  # plain: the server sees every input anyway (it is trusted there); no floor below n_min
            out.append(n)
    return tuple(out)
