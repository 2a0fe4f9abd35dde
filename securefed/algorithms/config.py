"""Hyper-parameters of the FL algorithms (the `algorithm.*` section of the root config)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

AlgorithmName = Literal["fedavg", "fedprox", "scaffold", "fedavgm", "fedadagrad", "fedyogi", "fedadam", "local"]

# Server learning rates when the user gives none: averaging methods apply the mean update as is;
# the adaptive ones (Reddi et al. 2021) normalise by sqrt(v), so their step is ~eta per coordinate.
DEFAULT_SERVER_LR = {"fedadagrad": 1e-2, "fedyogi": 1e-2, "fedadam": 1e-2}

# How parties' updates are weighted in the server's mean, when the user gives no algorithm.weighting:
# - fedavg: by sample count n_k / n (McMahan et al. 2017, Algorithm 1);
# - fedprox: by sample count (Li et al. 2020 sample devices with p_k = n_k / n and take the plain mean;
#   with uniform selection, as here, weighting by n_k is the same estimator; OpenFedLLM does so too);
# - fedavgm: by sample count (Hsu et al. 2019 build on FedAvg's weighted mean);
# - fedadagrad/fedyogi/fedadam: by sample count as in OpenFedLLM; Reddi et al. 2021's Algorithm 2 writes
#   the plain mean 1/|S| sum_i Delta_i, which `weighting = "uniform"` gives;
# - scaffold: uniform, the plain mean over the sampled parties (Karimireddy et al. 2020, Algorithm 1,
#   line 16; OpenFedLLM weights SCAFFOLD by sample count, which `weighting = "samples"` gives).
# - local: never aggregates.
DEFAULT_WEIGHTING = {"scaffold": "uniform"}


class AlgorithmConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: AlgorithmName = "fedavg"
    server_lr: float | None = Field(None, gt=0, description="eta; default 1.0, or 1e-2 for adaptive optimisers")
    server_lr_schedule: Literal["constant", "cosine"] = Field(
        "constant", description="cosine: the server lr decays over the rounds as training.lr's cosine does "
                                "(for adaptive servers: their moments keep stepping after the clients' lr has decayed)")
    mu: float = Field(0.01, ge=0, description="FedProx proximal weight")
    server_momentum: float = Field(0.5, ge=0, lt=1, description="FedAvgM momentum beta")
    beta1: float = Field(0.9, ge=0, lt=1, description="FedAdam/FedYogi first-moment decay")
    beta2: float = Field(0.99, ge=0, lt=1, description="FedAdam/FedYogi second-moment decay")
    tau: float = Field(1e-3, gt=0, description="adaptivity (epsilon) of FedAdagrad/FedYogi/FedAdam")
    weighting: Literal["uniform", "samples"] | None = Field(
        None, description="party weights in the server's mean: 'samples' (sample count) or 'uniform' (1 each); "
                          "default per algorithm, see DEFAULT_WEIGHTING")

    def resolved_weighting(self) -> str:
        return self.weighting or DEFAULT_WEIGHTING.get(self.name, "samples")

    def party_weight(self, samples: int) -> float:
        """The weight a party sends with its update. The server only sees sums (Aggregate), so the
        weighting is folded in here, on the party: uniform means every party sends weight 1."""
        return 1.0 if self.resolved_weighting() == "uniform" else float(samples)

    def resolved_server_lr(self) -> float:
        return self.server_lr if self.server_lr is not None else DEFAULT_SERVER_LR.get(self.name, 1.0)
