"""The types that cross the party/server boundary, and the one type the server algorithm may see.

The invariant of the product: the server-side algorithm step receives an `Aggregate` (sums and a
total weight) and nothing else. `Aggregate` has no field that could hold a per-party update, and the
protocols' server sides are the only code that builds one.

Adapters travel as peft-keyed state dicts (`TensorDict`); protocols work on flat float vectors, so
`FlatLayout` maps one to the other in a fixed, sorted key order that every party and the server
derive from the same adapter config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch

TensorDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Aggregate:
    """What the server-side algorithm step gets: sums over the contributing parties only.

    delta_sum:         sum_i w_i * (y_i - x), keyed like the adapter (w_i: the party's weight, its sample
                       count, or 1 under algorithm.weighting = "uniform" and user-level DP)
    control_delta_sum: sum_i (c_i+ - c_i) for SCAFFOLD, unweighted; None for other algorithms
    total_weight:      sum_i w_i
    num_contributors:  |S|, the number of parties whose inputs are in the sums
    """

    delta_sum: Mapping[str, torch.Tensor]
    control_delta_sum: Mapping[str, torch.Tensor] | None
    total_weight: float
    num_contributors: int

    def __post_init__(self) -> None:
        if self.num_contributors < 1:
            raise ValueError("an Aggregate needs at least one contributor")
        if not self.total_weight > 0:
            raise ValueError(f"total_weight must be > 0, got {self.total_weight}")

    def mean_delta(self) -> TensorDict:
        """The weighted mean update (sum_i w_i d_i) / (sum_i w_i): FedAvg's pseudo-gradient."""
        return {k: v / self.total_weight for k, v in self.delta_sum.items()}


@dataclass(frozen=True)
class FlatLayout:
    """A fixed order of adapter keys and shapes, to flatten a TensorDict to one vector and back."""

    keys: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, tensors: Mapping[str, torch.Tensor]) -> "FlatLayout":
        keys = tuple(sorted(tensors))
        return cls(keys, tuple(tuple(tensors[k].shape) for k in keys))

    @property
    def size(self) -> int:
        return int(sum(int(np.prod(s)) for s in self.shapes))

    def flatten(self, tensors: Mapping[str, torch.Tensor]) -> np.ndarray:
        """(size,) float32 vector in layout order; raises on missing/extra keys or wrong shapes."""
        if set(tensors) != set(self.keys):
            missing = sorted(set(self.keys) - set(tensors))[:3]
            extra = sorted(set(tensors) - set(self.keys))[:3]
            raise ValueError(f"adapter keys do not match the layout (missing {missing}, extra {extra})")
        parts = []
        for k, shape in zip(self.keys, self.shapes):
            t = tensors[k]
            if tuple(t.shape) != shape:
                raise ValueError(f"tensor {k!r} has shape {tuple(t.shape)}, layout expects {shape}")
            parts.append(t.detach().to("cpu", torch.float32).reshape(-1).numpy())
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def unflatten(self, vector: np.ndarray) -> TensorDict:
        vector = np.asarray(vector)
        if vector.shape != (self.size,):
            raise ValueError(f"vector has shape {vector.shape}, layout expects ({self.size},)")
        out: TensorDict = {}
        offset = 0
        for k, shape in zip(self.keys, self.shapes):
            n = int(np.prod(shape))
            out[k] = torch.from_numpy(np.array(vector[offset : offset + n], dtype=np.float32)).reshape(shape)
            offset += n
        return out
