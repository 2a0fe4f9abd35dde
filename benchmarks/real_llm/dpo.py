"""The DPO half of the real-LLM benchmark: federated DPO on HH-RLHF harmless-base, before/after."""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks.real_llm.sft import _targets, zero_shot
from securefed.config import load_config
from securefed.simulation.runner import simulate
from securefed.simulation.world import build_world


def dpo_overrides(args, p: dict) -> list[str]:
    cap = [] if p["dpo_max_examples"] is None else [f"data.max_examples={p['dpo_max_examples']}"]
    return [
        "task=dpo", f"model.name_or_path={args.model}", f"model.device={args.device}", f"seed={args.seed}",
        f"data.source={args.hh}", "data.preset=hh-rlhf", "data.skip_malformed=true", "data.test_fraction=0.1",
        "data.eval_fraction=0.0", *cap, f"parties={p['dpo_parties']}", f"rounds={p['dpo_rounds']}",
        f"training.max_steps={p['dpo_steps']}", f"training.batch_size={p['dpo_batch']}", f"training.lr={p['dpo_lr']}",
        f"training.max_length={p['dpo_max_length']}", "lora.dropout=0.0", f"lora.r={p['r']}",
        f"lora.alpha={2 * p['r']}", _targets(p["targets"]), f"evaluation.max_examples={p['dpo_test']}",
        f"evaluation.every={p['dpo_rounds']}", "evaluation.batch_size=4", "dpo.beta=0.1", *args.set,
    ]


def likelihood_accuracy(world, params) -> float:
    """Share of held-out pairs where the policy gives the chosen reply a higher log-probability."""
    import torch

    from securefed.models.adapter import set_adapter_state
    from securefed.training.dpo import policy_logprobs

    set_adapter_state(world.model, params)
    wins = []
    with torch.no_grad():
        for b in world.evalset.batches:
            lp = policy_logprobs(world.model, {k: v.to(world.device) for k, v in b.items()})
            n = lp.shape[0] // 2
            wins += (lp[:n] > lp[n:]).tolist()
    return sum(wins) / len(wins)


def run_dpo(args, p: dict, out: Path, log) -> list[dict]:
    from safetensors.torch import load_file

    base = dpo_overrides(args, p)
    world = build_world(load_config(None, base))
    before = zero_shot(world)
    rows = [{"run": "DPO base (before)", "likelihood_accuracy": likelihood_accuracy(world, world.initial_adapter),
             "preference_accuracy": before["preference_accuracy"], "reward_margin": before["reward_margin"],
             "pairs": sum(len(b["input_ids"]) // 2 for b in world.evalset.batches)}]
    log(rows[-1])
    for protocol in args.dpo_protocols.split(","):
        t0 = time.perf_counter()
        run_dir = out / "runs" / f"dpo-fedavg-{protocol}"
        summary = simulate(load_config(None, base + [f"aggregation.protocol={protocol}"]), run_dir,
                           console=args.console)
        final = summary["final"]
        adapter = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
        rows.append({"run": f"DPO fedavg {protocol} (after)", "likelihood_accuracy": likelihood_accuracy(world, adapter),
                     "preference_accuracy": final["preference_accuracy"], "reward_margin": final["reward_margin"],
                     "train_loss": final["train_loss"], "seconds": time.perf_counter() - t0})
        log(rows[-1])
    return rows

