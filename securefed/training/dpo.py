"""One party's local round of DPO (Rafailov et al. 2023): the value-alignment counterpart of `sft.train_local`.

Policy = base + LoRA; reference = the same base with the adapter disabled (`model.disable_adapter()`
under no_grad, in eval mode): no second model copy, and the reference never moves, whatever the
global adapter is. Per pair, with sequence log-probs summed over the response tokens only (EOS
included, prompt and padding excluded):

    margin = beta * ((log pi(y_c|x) - log ref(y_c|x)) - (log pi(y_r|x) - log ref(y_r|x)))
    loss   = -log sigmoid(margin)

The loop is `sft.train_local` with this loss: the same optimizer, gradient accumulation, FL hooks
(`grad_correction`, `step_correction`, `client_finish`), clipping and `LocalResult`, so
every algorithm and every aggregation protocol applies unchanged (the payload is the adapter delta).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F

from securefed.algorithms.base import Algorithm, ClientContext, ClientState
from securefed.evaluation.metrics import preference_scores
from securefed.models.adapter import set_adapter_state
from securefed.training.batches import IGNORE
from securefed.training.config import TrainingConfig
from securefed.training.sft import LocalResult, train_local

DEFAULT_BETA = 0.1


def sequence_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(N,) sum of log p(labels[t] | ..t-1) over positions with labels != IGNORE.

    logits (N, T, V) from a causal LM, labels (N, T): position t-1 predicts token t.
    """
    target = labels[:, 1:]  # (N, T-1)
    mask = target != IGNORE
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (N, T-1, V), float32 for the sums
    token = logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (N, T-1)
    return torch.where(mask, token, torch.zeros_like(token)).sum(-1)


def dpo_loss(
    policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor, reference_rejected: torch.Tensor, beta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pair (loss, reward margin): margin = beta*((pi_c - ref_c) - (pi_r - ref_r)), loss = -log sigmoid(margin)."""
    if not beta > 0:
        raise ValueError(f"beta must be positive, got {beta}")
    margin = beta * ((policy_chosen - reference_chosen) - (policy_rejected - reference_rejected))
    return -F.logsigmoid(margin), margin


def _forward_logprobs(model: Any, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return sequence_logprobs(logits, batch["labels"])


def policy_logprobs(model: Any, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Sequence log-probs of every row of `batch` under base + the active LoRA adapter (with grad)."""
    return _forward_logprobs(model, batch)


@torch.no_grad()
def reference_logprobs(model: Any, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Sequence log-probs under the frozen base: the adapter disabled, eval mode (no dropout)."""
    was_training = model.training
    model.eval()
    try:
        with model.disable_adapter():
            return _forward_logprobs(model, batch)
    finally:
        model.train(was_training)


def _halves(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n = x.shape[0] // 2  # collate_pairs: chosen rows first, then the rejected ones
    return x[:n], x[n:]


def batch_dpo_loss(model: Any, batch: Mapping[str, torch.Tensor], beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pair (loss, margin) of a paired (2B, T) batch; the loss carries the policy's gradient."""
    reference = reference_logprobs(model, batch)
    policy = policy_logprobs(model, batch)
    return dpo_loss(*_halves(policy), *_halves(reference), beta)


def train_local_dpo(
    model: Any,
    batches: Sequence[Mapping[str, torch.Tensor]],
    cfg: TrainingConfig,
    lr: float,
    algorithm: Algorithm,
    ctx: ClientContext,
    client_state: ClientState,
    device: torch.device,
    *,
    beta: float = DEFAULT_BETA,
) -> LocalResult:
    """`train_local` with the DPO loss: cfg.max_steps optimizer steps of cfg.grad_accum paired
    micro-batches (from `draw_pair_batches`) each, from ctx.global_params."""

    def loss_fn(m: Any, micro: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return batch_dpo_loss(m, micro, beta)[0].mean()  # mean over the micro-batch's pairs

    return train_local(model, batches, cfg, lr, algorithm, ctx, client_state, device, loss_fn=loss_fn)


def dpo_dp_task(beta: float = DEFAULT_BETA):
    """Example-level DP-SGD for DPO (`dp_sgd.train_local_dp(..., task=...)`): the privacy unit is a
    preference pair, Poisson-sampled as a pair, collated as chosen row i and rejected row B+i, its
    gradient (both rows) clipped as one. The reference forward runs under no_grad in eval mode, so
    Opacus records nothing for it."""
    from securefed.training.dp_sgd import DPTask
    from securefed.training.preference_batches import collate_pairs

    def unit_losses(m: Any, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return batch_dpo_loss(m, batch, beta)[0]

    return DPTask(collate_pairs, unit_losses, rows_per_unit=2)


@torch.no_grad()
def evaluate_preferences(
    model: Any, tokenizer: Any, params: Mapping[str, torch.Tensor], evalset: Any, device: torch.device,
    batch_size: int = 0, max_new_tokens: int = 0, *, beta: float = DEFAULT_BETA,
) -> dict[str, float]:
    """Held-out DPO metrics of an adapter over `evalset.batches` (paired batches, built once):
    eval_loss (mean DPO loss), preference_accuracy (share of pairs whose implicit reward of the
    chosen response beats the rejected one; ties count as wrong), reward_margin (mean margin) and
    the mean chosen/rejected implicit rewards. Same call shape as `evaluate_adapter`; the batch
    size and token budget are unused (the batches are fixed, nothing is generated)."""
    set_adapter_state(model, params)
    model.eval()
    pc: list[float] = []
    pr: list[float] = []
    rc: list[float] = []
    rr: list[float] = []
    for b in evalset.batches:
        b = {k: v.to(device) for k, v in b.items()}
        chosen, rejected = _halves(policy_logprobs(model, b))
        ref_chosen, ref_rejected = _halves(reference_logprobs(model, b))
        pc += chosen.tolist()
        pr += rejected.tolist()
        rc += ref_chosen.tolist()
        rr += ref_rejected.tolist()
    scores = preference_scores(pc, pr, rc, rr, beta)
    losses, _ = dpo_loss(torch.tensor(pc, dtype=torch.float64), torch.tensor(pr, dtype=torch.float64),
                         torch.tensor(rc, dtype=torch.float64), torch.tensor(rr, dtype=torch.float64), beta)
    return {
        "eval_loss": float(losses.mean()),
        "preference_accuracy": scores.accuracy,
        "reward_margin": scores.mean_margin,
        "chosen_reward": scores.mean_chosen_reward,
        "rejected_reward": scores.mean_rejected_reward,
    }
