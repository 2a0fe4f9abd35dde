"""Why example-level DP-SGD does (or does not) learn in issue 25's recipe: per-step signal against noise.

    python -m benchmarks.dp_snr [--adapter bench-state/real_llm_headline/runs/fedavg-plain/adapter] \
        [--examples 48] [--batches 8 64] [--out bench-out/dp_snr]

For every party of the headline recipe (10 parties, Dirichlet 0.5, 3 sampled a round, 10 DP-SGD steps a
round it is sampled, the rounds it is in fixed by the public selection) and epsilon 1, 4, 8: the
sampling rate q = B/N, the planned steps T, the noise multiplier z the accountant solves for, and the
L2 norm of the noise one averaged step carries, z C sqrt(d) / (q N) (Opacus divides the noisy sum by
the expected batch q N; d = LoRA parameters). Measured on the real model, `--examples` training records
drawn from every party: each record's LoRA gradient norm (the clipping rate at C), and the norm of the
mean of B clipped per-example gradients, the most signal one step can carry. signal / noise per step is
the figure; across a round's T_r steps signal adds linearly and noise as sqrt(T_r), and FedAvg over k
parties divides the noise by another sqrt(k).
Measured at the base adapter (round 0) and, with --adapter, at a trained one (late rounds).
Writes OUT/dp_snr.json and prints the table; no row is scored, nothing is trained.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch

from benchmarks.llm_efficiency import SHARED_DATA, default_model
from benchmarks.real_llm.sft import PRESETS, sft_base
from securefed.config import load_config
from securefed.models.adapter import adapter_params, set_adapter_state
from securefed.privacy.accounting import example_sample_rate, resolve_noise_multiplier
from securefed.simulation.world import build_world
from securefed.training.batches import collate
from securefed.training.dp_sgd import per_example_loss


def per_example_grads(world, params, records) -> torch.Tensor:
    """(M, d): each record's flattened LoRA gradient of its mean response-token CE, at `params`."""
    set_adapter_state(world.model, params)
    plist = list(adapter_params(world.model).values())
    pad = world.tokenizer.pad_token_id or 0
    world.model.eval()  # dropout is 0 in the recipe; eval keeps it deterministic regardless
    rows = []
    for rec in records:
        batch = {k: v.to(world.device) for k, v in collate([rec], pad).items()}
        logits = world.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        grads = torch.autograd.grad(per_example_loss(logits, batch["labels"]).sum(), plist)
        rows.append(torch.cat([g.reshape(-1) for g in grads]).float().cpu())
    return torch.stack(rows)


def signal(grads: torch.Tensor, clip: float, batch: int, rng: np.random.Generator, draws: int = 32) -> float:
    """Mean over `draws` random batches of || mean of B clipped per-example gradients ||."""
    norms = grads.norm(dim=1, keepdim=True)
    clipped = grads * torch.clamp(clip / norms, max=1.0)
    out = [clipped[rng.choice(len(grads), size=min(batch, len(grads)), replace=False)].mean(0).norm().item()
           for _ in range(draws)]
    return float(np.mean(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=default_model())
    ap.add_argument("--data", default=str(SHARED_DATA / "financial_phrasebank" / "all-data.csv"))
    ap.add_argument("--adapter", help="a trained adapter directory (adapter_model.safetensors) to measure at too")
    ap.add_argument("--examples", type=int, default=48)
    ap.add_argument("--batches", type=int, nargs="+", default=[8, 64], help="expected batch sizes B to compare")
    ap.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 4.0, 8.0])
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--out", default="bench-out/dp_snr")
    args = ap.parse_args()
    p = PRESETS["headline"]
    ns = argparse.Namespace(model=args.model, device="cpu", seed=0, data=args.data, alpha=0.5, parties=10, set=[])
    cfg = load_config(None, sft_base(ns, p) + ["privacy.mechanism=example", "privacy.target_epsilon=8",
                                               f"privacy.max_grad_norm={args.clip}"])
    world = build_world(cfg)
    facts = world.privacy.facts
    d = sum(v.numel() for v in world.initial_adapter.values())
    rng = np.random.default_rng(0)
    pool = [r for pid in world.party_ids for r in world.party_data[pid]]
    records = [pool[i] for i in rng.choice(len(pool), size=min(args.examples, len(pool)), replace=False)]
    points = {"base (round 0)": dict(world.initial_adapter)}
    if args.adapter:
        from safetensors.torch import load_file

        points[f"trained ({args.adapter})"] = load_file(str(Path(args.adapter) / "adapter_model.safetensors"))
    measured = {}
    for label, params in points.items():
        grads = per_example_grads(world, params, records)
        norms = grads.norm(dim=1)
        measured[label] = {"grad_norm_median": norms.median().item(), "grad_norm_p90": norms.quantile(0.9).item(),
                           "clip_rate": (norms > args.clip).float().mean().item(),
                           "signal": {b: signal(grads, args.clip, b, rng) for b in args.batches}}
    rows = []
    for b in args.batches:
        for pid in world.party_ids:
            n, part = len(world.party_data[pid]), facts.participations[pid]
            q, steps = example_sample_rate(b, n), max(1, part) * p["steps"]
            for eps in args.epsilons:
                z = resolve_noise_multiplier(None, eps, cfg.privacy.target_delta, q, steps, cfg.privacy.accountant)
                noise = z * args.clip * math.sqrt(d) / (q * n)
                rows.append({"batch": b, "party": pid, "records": n, "rounds_in": part, "q": q, "steps": steps,
                             "epsilon": eps, "z": z, "noise_norm": noise,
                             **{f"snr {k}": m["signal"][b] / noise for k, m in measured.items()}})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "dp_snr.json").write_text(json.dumps({"d": d, "clip": args.clip, "measured": measured, "rows": rows},
                                                indent=2))
    print(f"d = {d} LoRA parameters, C = {args.clip}, {len(records)} records measured")
    for k, m in measured.items():
        print(f"{k}: per-example grad norm median {m['grad_norm_median']:.2f}, p90 {m['grad_norm_p90']:.2f}, "
              f"clipped {m['clip_rate']:.0%}; signal ||mean of B clipped|| "
              + ", ".join(f"B={b}: {s:.3f}" for b, s in m["signal"].items()))
    snr_cols = [c for c in rows[0] if c.startswith("snr")]
    print("| B | epsilon | z (median party) | noise norm / step (median) | " + " | ".join(snr_cols) + " |")
    print("|---" * (4 + len(snr_cols)) + "|")
    for b in args.batches:
        for eps in args.epsilons:
            sel = [r for r in rows if r["batch"] == b and r["epsilon"] == eps]
            med = lambda k: float(np.median([r[k] for r in sel]))  # noqa: E731
            print(f"| {b} | {eps:g} | {med('z'):.2f} | {med('noise_norm'):.2f} | "
                  + " | ".join(f"{med(c):.4f}" for c in snr_cols) + " |")


if __name__ == "__main__":
    main()
