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

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from securefed.privacy import distributed
from securefed.privacy.accounting import Spend, check_budget, epsilon, example_sample_rate, resolve_noise_multiplier
from securefed.privacy.config import PrivacyConfig
from securefed.privacy.rng import secure_generator, secure_normal
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


@dataclass
class PrivacyEngine:
    cfg: PrivacyConfig
    facts: FederationFacts
    ledger: dict[str, tuple[Spend, ...]] = field(default_factory=dict)
    _round_spends: dict[str, Spend] = field(default_factory=dict)
    _round_notes: dict[str, Any] = field(default_factory=dict)
    _plan: distributed.DistributedPlan | None = None
    _round: int = 0

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

    def user_sample_rate(self) -> float:
        f = self.facts
        return f.parties_per_round / len(f.participations) if self.cfg.sampling_amplification else 1.0

    def user_noise(self) -> float:
        """z (noise std / sensitivity) that the *sum* must carry. With amplification every round
        counts (the party is in it with probability q); without, only the rounds it is selected in."""
        f, c = self.facts, self.cfg
        steps = f.rounds if c.sampling_amplification else max(1, max(f.participations.values(), default=f.rounds))
        return resolve_noise_multiplier(c.noise_multiplier, c.target_epsilon, c.target_delta,
                                        self.user_sample_rate(), steps, c.accountant)

    def planned_spend(self, pid: str) -> Spend:
        if self.cfg.mechanism == "example":
            return self.example_spend(pid)
        return Spend(self.user_noise(), self.user_sample_rate(), 1)

    # --- round hooks ----------------------------------------------------------------------------------

    def admit_round(self, r: int, selected: Sequence[str]) -> tuple[str, ...]:
        """Start round r: the selected parties that may take part (the others' budgets are spent and
        on_budget_exhausted="stop"), and the round's distributed plan for exactly those."""
        self._round_spends, self._round_notes, self._plan, self._round = {}, {}, None, r
        admitted = tuple(p for p in selected if self._admit(p, r))
        if admitted and self.cfg.mechanism == "user-distributed":
            from securefed.simulation.steps import derive_seed

            c = self.cfg
            self._plan = distributed.DistributedPlan.for_round(
                self.facts.vector_len, c.update_clip_norm, self.user_noise(), len(admitted), c.dropout_tolerance,
                c.modulus_bits, c.tail_bound, c.rounding_beta, self.facts.carrier_step,
                derive_seed(self.facts.seed, "ddp-rotation", r))
        return admitted

    def _admit(self, pid: str, r: int) -> bool:
        c = self.cfg
        if not c.enabled or c.target_epsilon is None:
            return True
        check = check_budget(self.ledger.get(pid, ()), self.planned_spend(pid), c.target_epsilon, c.target_delta,
                             c.accountant)
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

    def party_input(self, delta: np.ndarray, control: np.ndarray | None, weight: float) -> PartyInput:
        c = self.cfg
        if not c.user_level:
            return PartyInput(delta, control, float(weight))
        clipped, _ = user_level_input(delta, c.update_clip_norm)
        if c.mechanism == "user-central":
            return clipped
        if self._plan is None:
            raise RuntimeError("admit_round was not called")
        return PartyInput(distributed.encode(self._plan, clipped.delta.astype(np.float64), secure_generator()),
                          None, 1.0)

    def finish_round(self, vsum: VectorSum) -> VectorSum:
        c = self.cfg
        n = len(vsum.contributors)
        if c.mechanism == "user-central":
            z = self.user_noise()
            if c.secure_mode:
                normal = secure_normal
            else:
                rng = np.random.default_rng(self._noise_seed())
                normal = lambda count, std: rng.normal(0.0, std, count)  # noqa: E731
            vsum = add_central_noise(vsum, z, c.update_clip_norm, normal)
            self._round_spends = {p: Spend(z, self.user_sample_rate(), 1) for p in vsum.contributors}
        elif c.mechanism == "user-distributed":
            plan = self._plan
            z_eff = plan.effective_noise_multiplier(n)
            vsum = VectorSum(distributed.decode(plan, vsum.delta_sum), None, float(n), vsum.contributors,
                             {**vsum.stats, "dp_noise_std": plan.noise_std(n), "dp_gamma": plan.gamma,
                              "dp_modulus_bits": plan.bits, "dp_under_noised": n < plan.n_min})
            self._round_spends = {p: Spend(z_eff, self.user_sample_rate(), 1) for p in vsum.contributors}
        return vsum

    def close_round(self) -> dict[str, Any]:
        """Commit this round's spends to the parties' histories; the round's privacy metrics."""
        for p, s in self._round_spends.items():
            self.ledger[p] = (*self.ledger.get(p, ()), s)
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
            "dp_spends": {p: [s.noise_multiplier, s.sample_rate, s.steps] for p, s in self._round_spends.items()},
            **self._round_notes,
        }
        return out

    def restore(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Rebuild the ledger from saved metrics rows (resume)."""
        self.ledger = {}
        for row in rows:
            for p, (z, q, steps) in row.get("dp_spends", {}).items():
                self.ledger[p] = (*self.ledger.get(p, ()), Spend(float(z), float(q), int(steps)))


def build_engine(root: Any, party_ids: Sequence[str], party_sizes: Mapping[str, int], vector_len: int,
                 accounted: Sequence[str] | None = None) -> PrivacyEngine:
    """The engine for a simulation, a deployed server or a deployed party from the root config.

    party_ids: every party of the federation (selection and sampling rates depend on all of them).
    party_sizes: the record counts this side knows (simulation: all; a party: its own; the server:
    none, it never runs example-level DP-SGD). accounted: whose epsilon to report (default: all)."""
    from securefed.simulation.steps import select_parties

    cfg: PrivacyConfig = root.privacy
    selections = [select_parties(party_ids, r, root.seed, root.sampling.count, root.sampling.fraction)
                  for r in range(root.rounds)]
    participations = {p: sum(p in s for s in selections) for p in party_ids}
    carrier = 1.0
    if root.aggregation.protocol == "secagg":
        carrier = root.aggregation.secagg.clip / 2 ** root.aggregation.secagg.precision_bits
    facts = FederationFacts(dict(party_sizes), participations, root.rounds, len(selections[0]),
                            root.training.max_steps, root.training.batch_size * root.training.grad_accum,
                            vector_len, carrier, root.seed, tuple(party_ids if accounted is None else accounted))
    return PrivacyEngine(cfg, facts)
