"""The `training.*` section: one party's local optimisation in one round."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TrainingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_steps: int = Field(10, ge=1, description="optimizer steps per party per round")
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    lr: float = Field(5e-4, gt=0, description="initial local learning rate (AdamW)")
    min_lr: float = Field(0.0, ge=0, description="final learning rate of the cosine decay over rounds")
    schedule: Literal["cosine", "constant"] = "cosine"
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float | None = Field(1.0, gt=0, description="clip the local gradient norm; None: off")
    max_length: int = Field(128, ge=8, description="tokens per example (prompt truncated from the left)")
    autocast_bf16: bool = Field(True, description="bf16 autocast on CUDA (ignored on CPU)")
    gradient_checkpointing: bool = Field(False, description="recompute activations in backward (less memory)")
    packing: bool = Field(False, description="padding-free SFT batches: a micro-batch's examples in one row, "
                          "attention kept inside each example (DP-SGD and DPO batches stay padded)")

    @model_validator(mode="after")
    def _lr_order(self) -> "TrainingConfig":
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) must be <= lr ({self.lr})")
        return self
