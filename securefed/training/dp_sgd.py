"""Example-level DP-SGD for one party's local round (Opacus): the DP counterpart of `sft.train_local`.

Per optimizer step:
  1. Poisson-sample the party's records (each with probability q): the sampling the accountant assumes.
  2. One loss per example: mean token cross-entropy over that example's response tokens. (The model's
     own `.loss` is a flat mean over all tokens of the batch, which is not a sum of per-example terms,
     so clipping "its" per-example gradients would clip the wrong quantity.)
  3. Opacus clips each example's LoRA gradient to C (ghost clipping computes the norms without
     materialising per-example gradients; hooks materialise them) and adds N(0, (z C)^2), then
     divides by the expected batch q*N.
  4. Then, and only then, the FL algorithm's `grad_correction` (FedProx's mu (w - x), SCAFFOLD's
     c - c_i) and the optional global norm clip: both depend on the data only through already
     privatised values, so they are post-processing and cost no budget. Applying them before the
     noise would change the sensitivity (the correction is not per-example).
Micro-batches (cfg.batch_size) bound memory; a logical Poisson batch spans as many as it needs.

Other tasks plug in through `DPTask`: how a micro-batch of privacy units is collated, the per-unit
loss, and how many rows of the batch one unit occupies. DPO's unit is a preference pair, two rows
(chosen i and rejected B+i of a (2B, T) batch): its per-pair gradient is the sum of both rows'
contributions, so before Opacus clips (hooks mode only: ghost clipping has per-row norms, and the
norm of a sum is not a function of the rows' norms) the per-row gradients are merged per unit.
Scaling: with loss_reduction="mean" Opacus multiplies each row's gradient by the rows it saw (kB)
while the task loss is a mean over the B units, so a unit's gradient is (sum of its k rows) / k.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from securefed.algorithms.base import Algorithm, ClientContext, ClientState
from securefed.models.adapter import adapter_params, get_adapter_state, set_adapter_state
from securefed.privacy.rng import poisson_sample, secure_normal, secure_uniforms
from securefed.training.batches import IGNORE, Tokenized, collate
from securefed.training.config import TrainingConfig
from securefed.training.sft import LocalResult, _to, apply_grad_correction, apply_step_correction, autocast_for


@dataclass(frozen=True)
class DPSGDParams:
    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float  # q: Poisson rate per record per step
    grad_sample_mode: str = "auto"  # "auto" | "ghost" | "hooks"
    secure_mode: bool = False  # CSPRNG sampling and noise
    seed: int = 0  # sampling and noise seed when not secure_mode (reproducible runs and tests)

    def __post_init__(self) -> None:
        if not (self.noise_multiplier >= 0 and self.max_grad_norm > 0 and 0 < self.sample_rate <= 1):
            raise ValueError("need noise_multiplier >= 0, max_grad_norm > 0, 0 < sample_rate <= 1")
        if self.grad_sample_mode not in ("auto", "ghost", "hooks"):
            raise ValueError(f"grad_sample_mode must be auto, ghost or hooks, got {self.grad_sample_mode!r}")


@dataclass(frozen=True)
class DPLocalResult:
    result: LocalResult
    steps: int
    sample_rate: float
    noise_multiplier: float
    mean_batch: float  # realised mean Poisson batch size
    grad_sample_mode: str


@dataclass(frozen=True)
class DPTask:
    """A task's privacy unit for DP-SGD. `collate(units, pad_id)` -> a batch whose unit i occupies rows
    i, B+i, ..., (k-1)B+i (k = rows_per_unit); `unit_losses(model, batch)` -> (B,) per-unit losses,
    each depending only on its own unit's rows (a forward under no_grad/eval, e.g. DPO's reference,
    records no per-sample state). Runs in hooks mode."""

    collate: Callable[[Sequence[Any], int], Mapping[str, torch.Tensor]]
    unit_losses: Callable[[Any, Mapping[str, torch.Tensor]], torch.Tensor]
    rows_per_unit: int = 1

    def __post_init__(self) -> None:
        if self.rows_per_unit < 1:
            raise ValueError("rows_per_unit must be >= 1")


def merge_unit_grad_samples(plist: Sequence[torch.Tensor], rows_per_unit: int) -> None:
    """Per-row grad samples (kB, ...) -> per-unit (B, ...): rows i, B+i, ... summed, divided by k
    (undoing the extra factor k that Opacus's "mean" rescaling by kB rows puts on a mean over B units)."""
    k = rows_per_unit
    for p in plist:
        gs = p.grad_sample
        if gs is None:
            continue
        if not isinstance(gs, torch.Tensor):  # one backward per micro-batch gives one tensor
            raise RuntimeError("expected a single per-sample gradient tensor per micro-batch")
        if gs.shape[0] % k:
            raise RuntimeError(f"{gs.shape[0]} per-row gradients are not {k} rows per unit")
        p.grad_sample = gs.reshape(k, gs.shape[0] // k, *gs.shape[1:]).sum(0) / k


def per_example_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, T, V) logits, (B, T) labels -> (B,) mean CE over each example's labelled next tokens."""
    lg = logits[:, :-1].float()
    target = labels[:, 1:]
    ce = torch.nn.functional.cross_entropy(lg.reshape(-1, lg.size(-1)), target.reshape(-1), ignore_index=IGNORE,
                                           reduction="none").view(target.shape)  # (B, T-1)
    count = (target != IGNORE).sum(dim=1).clamp(min=1)
    return ce.sum(dim=1) / count


class _PerExampleCE:
    """The criterion Opacus's ghost clipping wraps: it flips `reduction` to "none" to get (B,) losses."""

    reduction = "mean"

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        per = per_example_loss(logits, labels)
        return per if self.reduction == "none" else (per.mean() if self.reduction == "mean" else per.sum())


def resolve_mode(model: Any, mode: str) -> str:
    """auto -> ghost when every trainable tensor is the weight/bias of an nn.Linear (LoRA A/B are), the
    layers Opacus's ghost norms cover; otherwise hooks (per-example gradients, any supported layer)."""
    if mode != "auto":
        return mode
    for module in model.modules():
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if own and not isinstance(module, torch.nn.Linear):
            return "hooks"
    return "ghost"


def _sample(n: int, q: float, rng: np.random.Generator | None) -> np.ndarray:
    u = secure_uniforms(n) if rng is None else rng.random(n)
    return poisson_sample(n, q, u)


def train_local_dp(
    model: Any,
    data: Sequence[Tokenized],
    pad_id: int,
    cfg: TrainingConfig,
    lr: float,
    algorithm: Algorithm,
    ctx: ClientContext,
    client_state: ClientState,
    device: torch.device,
    dp: DPSGDParams,
    task: DPTask | None = None,
) -> DPLocalResult:
    """cfg.max_steps DP-SGD steps over the party's records, from ctx.global_params.

    task=None: SFT (records are `Tokenized`, per-example CE). Otherwise `data` holds the task's units
    (e.g. DPO pairs), Poisson-sampled as units, clipped per unit, in hooks mode."""
    from opacus.grad_sample.utils import prepare_module
    from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping
    from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping

    if not data:
        raise ValueError("a party with no records cannot run DP-SGD")
    n = len(data)
    expected = max(1, round(dp.sample_rate * n))
    set_adapter_state(model, ctx.global_params)
    params = adapter_params(model)
    plist = list(params.values())
    dctx = ClientContext(_to(ctx.global_params, device), _to(ctx.server_control, device))
    dstate = ClientState(_to(client_state.control, device), client_state.own_params)
    if task is not None:
        if dp.grad_sample_mode == "ghost":
            raise ValueError("grad_sample_mode 'ghost' cannot clip a multi-row privacy unit; use 'hooks' or 'auto'")
        mode = "hooks"
    else:
        mode = resolve_mode(model, dp.grad_sample_mode)
    rng = None if dp.secure_mode else np.random.default_rng(dp.seed)
    # secure_mode: Opacus adds no noise; we add CSPRNG noise of the same std after its clip and scaling
    # (torchcsprng, which Opacus's own secure_mode needs, does not build for this torch).
    opt_noise = 0.0 if dp.secure_mode else dp.noise_multiplier
    generator = None if dp.secure_mode else torch.Generator(device=device).manual_seed(dp.seed)
    base_opt = torch.optim.AdamW(plist, lr=lr, weight_decay=cfg.weight_decay)
    losses: list[float] = []
    sizes: list[int] = []
    with warnings.catch_warnings():
        # Frozen base layers mean a LoRA layer's input never requires grad: torch warns on every backward.
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        kwargs = {"max_grad_norm": dp.max_grad_norm} if mode == "ghost" else {}
        hooks = prepare_module(model, mode, wrap_model=False, batch_first=True, loss_reduction="mean", **kwargs)
        try:
            opt_cls = DPOptimizerFastGradientClipping if mode == "ghost" else DPOptimizer
            opt = opt_cls(base_opt, noise_multiplier=opt_noise, max_grad_norm=dp.max_grad_norm,
                          expected_batch_size=expected, loss_reduction="mean", generator=generator)
            criterion = DPLossFastGradientClipping(hooks, opt, _PerExampleCE(), "mean") if mode == "ghost" else None
            model.train()
            for _ in range(cfg.max_steps):
                idx = _sample(n, dp.sample_rate, rng)
                sizes.append(len(idx))
                chunks = [idx[i : i + cfg.batch_size] for i in range(0, len(idx), cfg.batch_size)]
                if not chunks:  # an empty Poisson batch still takes a (pure-noise) step
                    for p in plist:
                        if mode == "ghost":
                            p.grad = torch.zeros_like(p)
                        else:
                            p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)
                    chunks = [None]
                for c, chunk in enumerate(chunks):
                    if chunk is not None and task is not None:
                        micro = {k: v.to(device) for k, v in task.collate([data[j] for j in chunk], pad_id).items()}
                        with autocast_for(device, cfg.autocast_bf16):
                            loss = task.unit_losses(model, micro).mean()  # mean over the micro-batch's units
                        losses.append(float(loss.detach()))
                        loss.backward()
                        merge_unit_grad_samples(plist, task.rows_per_unit)
                    elif chunk is not None:
                        micro = {k: v.to(device) for k, v in collate([data[j] for j in chunk], pad_id).items()}
                        with autocast_for(device, cfg.autocast_bf16):
                            logits = model(input_ids=micro["input_ids"], attention_mask=micro["attention_mask"]).logits
                        if criterion is not None:
                            loss = criterion(logits, micro["labels"])
                            losses.append(float(loss.loss_per_sample.detach().mean()))
                        else:
                            loss = per_example_loss(logits, micro["labels"]).mean()
                            losses.append(float(loss.detach()))
                        loss.backward()
                    last = c == len(chunks) - 1
                    opt.signal_skip_step(do_skip=not last)
                    if opt.pre_step():  # clip, sum, noise, / expected batch (only on the last chunk)
                        _finish_step(opt, params, plist, dp, expected, cfg, algorithm, dctx, dstate, lr)
                    opt.zero_grad(set_to_none=True)
        finally:
            model.eval()
            hooks.cleanup()
            for p in plist:
                p.grad = None
    new = get_adapter_state(model)
    delta = {k: new[k] - ctx.global_params[k].to(torch.float32) for k in new}
    state, control_delta = algorithm.client_finish(client_state, ctx, delta, cfg.max_steps, lr)
    result = LocalResult(delta, control_delta, state, cfg.max_steps, sum(losses) / max(len(losses), 1))
    return DPLocalResult(result, cfg.max_steps, dp.sample_rate, dp.noise_multiplier,
                         float(np.mean(sizes)) if sizes else 0.0, mode)


def _finish_step(opt, params, plist, dp, expected, cfg, algorithm, dctx, dstate, lr) -> None:
    if dp.secure_mode and dp.noise_multiplier > 0:
        std = dp.noise_multiplier * dp.max_grad_norm / expected
        for p in plist:
            noise = secure_normal(p.numel(), std)
            p.grad = p.grad + torch.from_numpy(noise).to(p.grad.device, p.grad.dtype).view_as(p)
    apply_grad_correction(algorithm, params, dctx, dstate)  # post-processing of the privatised gradient
    if cfg.max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(plist, cfg.max_grad_norm)
    opt.original_optimizer.step()
    # SCAFFOLD's drift uses only c and c_i (already-noised aggregates): post-processing too.
    drift = None if algorithm.step_correction is None else algorithm.step_correction(dctx, dstate)
    apply_step_correction(params, drift, lr)
