"""Hyper-parameters of the FL algorithms (the `algorithm.*` section of the root config)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

AlgorithmName = Literal["fedavg", "fedprox", "scaffold", "fedavgm", "fedadagrad", "fedyogi", "fedadam", "local"]

# Server learning rates when the user gives none: averaging methods apply the mean update as is;
# the adaptive ones (Reddi et al. 2021) normalise by sqrt(v), so their step is ~eta per coordinate.
DEFAULT_SERVER_LR = {"fedadagrad": 1e-2, "fedyogi": 1e-2, "fedadam": 1e-2}


class AlgorithmConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: AlgorithmName = "fedavg"
    server_lr: float | None = Field(None, gt=0, description="eta; default 1.0, or 1e-2 for adaptive optimisers")
    mu: float = Field(0.01, ge=0, description="FedProx proximal weight")
    server_momentum: float = Field(0.5, ge=0, lt=1, description="FedAvgM momentum beta")
    beta1: float = Field(0.9, ge=0, lt=1, description="FedAdam/FedYogi first-moment decay")
    beta2: float = Field(0.99, ge=0, lt=1, description="FedAdam/FedYogi second-moment decay")
    tau: float = Field(1e-3, gt=0, description="adaptivity (epsilon) of FedAdagrad/FedYogi/FedAdam")

    def resolved_server_lr(self) -> float:
        return self.server_lr if self.server_lr is not None else DEFAULT_SERVER_LR.get(self.name, 1.0)
