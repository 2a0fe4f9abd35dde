"""The `privacy.*` section: which differential-privacy mechanism protects what, and how much.

Mechanisms (the privacy unit differs, so they are alternatives, not layers):
- "none":             no DP (secure aggregation alone hides individual updates, not what the sum reveals).
- "example":          example-level DP-SGD in each party's local loop (Opacus): each party protects each of
                      its records; epsilon is per party, composed over the rounds it takes part in.
- "user-central":     DP-FedAvg: each party clips its whole update to `update_clip_norm`, the server adds
                      Gaussian noise to the sum (the server is trusted to add it).
- "user-distributed": same clipping; each party adds its share of Skellam noise in the integer domain
                      before secure aggregation, so the unmasked sum already carries the full noise.

Noise: give `noise_multiplier`, or `target_epsilon` (then the multiplier is solved over the planned
participations with the accountant). With both given, `noise_multiplier` wins and `target_epsilon`
is the budget the party stops (or warns) at.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Mechanism = Literal["none", "example", "user-central", "user-distributed"]


class PrivacyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mechanism: Mechanism = "none"
    target_epsilon: float | None = Field(None, gt=0, description="per-party budget over the whole run")
    target_delta: float = Field(1e-5, gt=0, lt=1)
    noise_multiplier: float | None = Field(None, ge=0, description="std of the noise / sensitivity")
    accountant: Literal["rdp", "prv"] = "rdp"
    on_budget_exhausted: Literal["stop", "warn"] = Field(
        "stop", description="stop: the party sits out rounds that would exceed target_epsilon")
    secure_mode: bool = Field(False, description="CSPRNG for sampling and noise; Opacus's float-attack-safe noise")

    # example-level DP-SGD
    max_grad_norm: float = Field(1.0, gt=0, description="per-example gradient clip (L2)")
    grad_sample_mode: Literal["auto", "ghost", "hooks"] = Field(
        "auto", description="auto: ghost clipping when every trainable tensor is an nn.Linear weight")

    # user-level DP
    update_clip_norm: float = Field(0.1, gt=0, description="L2 clip of a party's whole update (sensitivity)")
    sampling_amplification: bool = Field(
        False, description="user-central: select parties by Poisson sampling at q = count/parties from the OS "
                           "CSPRNG (secret) and charge every party at q in every round; the guarantee holds "
                           "against observers of the released model, not the coordinator (who sees the draw)")
    distributed_over_plain: bool = Field(
        False, description="allow user-distributed with aggregation.protocol 'plain': the server then sees "
                           "every noisy share; metrics report dp_epsilon_vs_server_max, one share's epsilon")
    dropout_tolerance: float = Field(
        0.1, ge=0, lt=1, description="distributed: fraction of selected parties that may drop with full noise kept")
    modulus_bits: int = Field(16, ge=4, le=24, description="distributed: the sum is taken mod 2^modulus_bits")
    tail_bound: float = Field(4.0, ge=1, description="distributed: stds of the sum that fit in half the modulus")
    rounding_beta: float = Field(math.exp(-0.5), gt=0, lt=1,
                                 description="distributed: conditional rounding's norm-bound failure probability")
    rotation: Literal["shake256", "numpy"] = Field(
        "shake256", description="distributed: how every side derives the rotation's public signs: shake256 (the "
                                "same on any machine) or numpy (runs and federations from before it had a name)")

    @field_validator("target_epsilon", "noise_multiplier", "max_grad_norm", "update_clip_norm", "tail_bound")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be finite")
        return v

    @model_validator(mode="after")
    def _noise_given(self) -> "PrivacyConfig":
        if self.mechanism != "none" and self.target_epsilon is None and self.noise_multiplier is None:
            raise ValueError(f"privacy.mechanism={self.mechanism!r} needs privacy.target_epsilon or "
                             "privacy.noise_multiplier")
        if self.mechanism == "user-distributed" and self.noise_multiplier == 0:
            raise ValueError("privacy.noise_multiplier must be > 0 for the distributed mechanism")
        return self

    @property
    def enabled(self) -> bool:
        return self.mechanism != "none"

    @property
    def user_level(self) -> bool:
        return self.mechanism in ("user-central", "user-distributed")


def check_compatible(privacy: PrivacyConfig, protocol: str, secagg_clip: float, secagg_precision_bits: int,
                     uses_control: bool) -> None:
    """Cross-section checks the root config runs; errors name the fields involved."""
    if privacy.user_level and uses_control:
        raise ValueError(f"privacy.mechanism={privacy.mechanism!r}: SCAFFOLD's control delta is not covered by "
                         "the update clip; use another algorithm.name")
    if privacy.sampling_amplification and privacy.mechanism != "user-central":
        raise ValueError(f"privacy.sampling_amplification applies to privacy.mechanism='user-central' only, not "
                         f"{privacy.mechanism!r} (distributed DP protects against the server, who sees the selection)")
    if privacy.sampling_amplification and protocol != "plain":
        # Dropping or aborting a draw too small for the protocol would make the release depend on the
        # draw's size, which the subsampled-Gaussian accounting does not cover.
        raise ValueError(f"privacy.sampling_amplification needs aggregation.protocol='plain', not {protocol!r}: "
                         "their rounds invite the public set every party derives from the roster (securefed.membership), "
                         "which a secret Poisson draw is not")
    if privacy.mechanism == "user-distributed":
        if privacy.accountant != "rdp":
            raise ValueError("privacy.accountant must be 'rdp' with privacy.mechanism='user-distributed' "
                             "(the Skellam mechanism is accounted with its RDP bound)")
        if protocol == "plain" and not privacy.distributed_over_plain:
            raise ValueError("privacy.mechanism='user-distributed' with aggregation.protocol='plain' shows the "
                             "server every noisy share (1/n of the noise each): use secagg, or set "
                             "privacy.distributed_over_plain=true to accept that and see its per-share epsilon")
        if protocol == "he":
            raise ValueError("privacy.mechanism='user-distributed' works with aggregation.protocol plain or secagg")
        if protocol == "secagg":
            # The integer carrier y*step must survive the codec exactly: a power-of-two clip makes step
            # a power of two, and |y| < 2^(modulus_bits-1) <= 2^precision_bits stays inside the clip.
            if math.frexp(secagg_clip)[0] != 0.5:
                raise ValueError(f"aggregation.secagg.clip ({secagg_clip}) must be a power of two with "
                                 "privacy.mechanism='user-distributed'")
            if privacy.modulus_bits > secagg_precision_bits:
                raise ValueError(f"privacy.modulus_bits ({privacy.modulus_bits}) exceeds "
                                 f"aggregation.secagg.precision_bits ({secagg_precision_bits})")
