"""The `simulation.*` section: where the simulated parties train.

    backend = "inprocess"   every party in turn on one model in this process (the default)
    backend = "ray"         a pool of Ray actors, each holding one copy of the base model, takes the
                            parties' jobs; memory grows with `ray.actors`, not with the parties
"""

from __future__ import annotations

import importlib.util
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

RAY_EXTRA = "simulation.backend 'ray' needs Ray: pip install 'securefed[ray]'"


class RayConfig(BaseModel):
    """The actor pool. Each actor asks Ray for num_cpus/num_gpus (fractions allowed: num_gpus = 0.25
    puts four actors on one GPU) plus the custom resources of its entry in `resources`."""

    model_config = ConfigDict(extra="forbid")

    address: str | None = Field(None, description="None: start a local Ray instance; 'auto' or "
                                "'ray://host:port': join a running cluster (its dashboard stays up)")
    actors: int = Field(2, ge=1, le=4096)
    num_cpus: float = Field(1.0, ge=0, le=1024)
    num_gpus: float = Field(0.0, ge=0, le=1024)
    resources: list[dict[str, float]] = Field(
        default_factory=list, description="custom resources per actor, cycled over the actors: "
        "[{nodeA = 1}, {nodeB = 1}] puts actors 0, 2, .. where nodeA is and 1, 3, .. where nodeB is")
    on_actor_failure: Literal["retry", "drop"] = Field(
        "retry", description="a party whose actor died (the actor is restarted either way): train it "
        "again on a live actor, or count it as a dropout of that round")
    max_retries: int = Field(2, ge=0, le=100, description="retries per party and round before it drops")
    max_restarts: int = Field(4, ge=0, le=1000, description="times Ray restarts a dead actor (it reloads the model)")
    start_timeout: float = Field(600.0, gt=0, description="seconds for the pool to be placed and load its models")
    torch_threads: int | None = Field(None, ge=1, le=1024,
                                      description="intra-op threads per actor (default: its num_cpus, >= 1)")

    @field_validator("num_gpus")
    @classmethod
    def _whole_above_one(cls, v: float) -> float:
        # Ray packs fractional GPUs onto one device; above one it hands out whole devices only.
        if v > 1 and v != int(v):
            raise ValueError("a fraction of a GPU must be <= 1 (e.g. 0.5); above 1 give whole GPUs")
        return v

    @field_validator("resources")
    @classmethod
    def _positive(cls, v: list[dict[str, float]]) -> list[dict[str, float]]:
        for entry in v:
            for name, amount in entry.items():
                if not name or name in ("CPU", "GPU", "memory") or not amount > 0:
                    raise ValueError(f"custom resource {name!r}: {amount} (give a custom name and an amount > 0; "
                                     "CPU and GPU are num_cpus/num_gpus)")
        return v


class SimulationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Literal["inprocess", "ray"] = "inprocess"
    ray: RayConfig = Field(default_factory=RayConfig)

    @model_validator(mode="after")
    def _ray_installed(self) -> "SimulationConfig":
        if self.backend == "ray" and importlib.util.find_spec("ray") is None:
            raise ValueError(RAY_EXTRA)
        return self
