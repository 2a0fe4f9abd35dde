"""One party's local round of supervised fine-tuning: a plain torch loop over the LoRA weights.

The FL algorithm enters through pure functions: `grad_correction` after each backward (FedProx's
proximal term), `step_correction` after each optimizer step (SCAFFOLD's drift term c - c_i) and
`client_finish` after the last step (SCAFFOLD's c_i update).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch

from securefed.aggregate import TensorDict
from securefed.algorithms.base import Algorithm, ClientContext, ClientState
from securefed.models.adapter import adapter_params, get_adapter_state, set_adapter_state
from securefed.training.batches import IGNORE
from securefed.training.config import TrainingConfig


@dataclass(frozen=True)
class LocalResult:
    delta: TensorDict  # y_i - x, float32 CPU
    control_delta: TensorDict | None  # SCAFFOLD only
    client_state: ClientState
    steps: int
    train_loss: float  # mean loss over the round's micro-batches


LossFn = Callable[[Any, Mapping[str, torch.Tensor]], torch.Tensor]  # (model, micro-batch) -> scalar loss


def sft_loss(model: Any, micro: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over response tokens (labels are -100 on prompt and padding).

    Only the positions that predict a labelled token go through the LM head: on chat-rendered rows
    most tokens are prompt, and the (tokens, vocab) fp32 logits and their gradient are the largest
    tensors of a LoRA step (SmolLM2: 49,152 x 4 bytes per token). Same value as the model's own loss.
    """
    return torch.nn.functional.cross_entropy(*labelled_logits(model, micro))


def labelled_logits(model: Any, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (K, V) fp32, targets (K,)) for the K positions that predict a labelled token."""
    target = batch["labels"][:, 1:]  # (B, T-1): position t predicts token t+1
    keep = torch.nn.functional.pad(target != IGNORE, (0, 1))  # (B, T); the last position predicts nothing
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    # No KV cache: with one, transformers skips the packed-sequence handling (collate_packed).
    logits = model(**inputs, use_cache=False, logits_to_keep=keep).logits  # (K, V)
    return logits.float(), target[target != IGNORE]


def _to(tensors: Mapping[str, torch.Tensor] | None, device: torch.device) -> TensorDict | None:
    return None if tensors is None else {k: v.to(device) for k, v in tensors.items()}


def autocast_for(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def apply_grad_correction(
    algorithm: Algorithm, params: Mapping[str, torch.nn.Parameter], dctx: ClientContext, dstate: ClientState
) -> None:
    """Replace each LoRA gradient by the algorithm's corrected one (FedProx's proximal term)."""
    if algorithm.grad_correction is None:
        return
    grads = {k: p.grad if p.grad is not None else torch.zeros_like(p) for k, p in params.items()}
    current = {k: p.detach() for k, p in params.items()}
    corrected = algorithm.grad_correction(current, grads, dctx, dstate)
    for k, p in params.items():
        p.grad = corrected[k].to(p.dtype)


@torch.no_grad()
def apply_step_correction(params: Mapping[str, torch.nn.Parameter], drift: Mapping[str, torch.Tensor] | None,
                          lr: float) -> None:
    """w <- w - lr * s after the optimizer step (SCAFFOLD's drift term s = c - c_i)."""
    if drift is not None:
        for k, p in params.items():
            p.sub_(lr * drift[k].to(p.dtype))


def train_local(
    model: Any,
    batches: Sequence[Mapping[str, torch.Tensor]],
    cfg: TrainingConfig,
    lr: float,
    algorithm: Algorithm,
    ctx: ClientContext,
    client_state: ClientState,
    device: torch.device,
    loss_fn: LossFn = sft_loss,
) -> LocalResult:
    """Run cfg.max_steps optimizer steps of cfg.grad_accum micro-batches each, from ctx.global_params.
    `loss_fn` is the objective (SFT by default; DPO passes its preference loss)."""
    if len(batches) < cfg.max_steps * cfg.grad_accum:
        raise ValueError(f"need {cfg.max_steps * cfg.grad_accum} micro-batches, got {len(batches)}")
    set_adapter_state(model, ctx.global_params)
    params = adapter_params(model)
    dctx = ClientContext(_to(ctx.global_params, device), _to(ctx.server_control, device))
    dstate = ClientState(_to(client_state.control, device), client_state.own_params)
    opt = torch.optim.AdamW(list(params.values()), lr=lr, weight_decay=cfg.weight_decay)
    drift = None if algorithm.step_correction is None else algorithm.step_correction(dctx, dstate)
    losses: list[float] = []
    model.train()
    try:
        for step in range(cfg.max_steps):
            opt.zero_grad(set_to_none=True)
            for micro in batches[step * cfg.grad_accum : (step + 1) * cfg.grad_accum]:
                micro = {k: v.to(device) for k, v in micro.items()}
                with autocast_for(device, cfg.autocast_bf16):
                    loss = loss_fn(model, micro)
                (loss / cfg.grad_accum).backward()
                losses.append(float(loss.detach()))
            apply_grad_correction(algorithm, params, dctx, dstate)
            if cfg.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(list(params.values()), cfg.max_grad_norm)
            opt.step()
            apply_step_correction(params, drift, lr)
    finally:
        model.eval()
    new = get_adapter_state(model)
    delta = {k: new[k] - ctx.global_params[k].to(torch.float32) for k in new}
    state, control_delta = algorithm.client_finish(client_state, ctx, delta, cfg.max_steps, lr)
    return LocalResult(delta, control_delta, state, cfg.max_steps, sum(losses) / max(len(losses), 1))


@torch.no_grad()
def eval_loss(model: Any, batches: Sequence[Mapping[str, torch.Tensor]], device: torch.device) -> float:
    """Mean NLL per response token over all batches (token-weighted, not batch-weighted)."""
    total, count = 0.0, 0
    for b in batches:
        logits, targets = labelled_logits(model, {k: v.to(device) for k, v in b.items()})
        total += float(torch.nn.functional.cross_entropy(logits, targets, reduction="sum"))
        count += targets.numel()
    return total / max(count, 1)
