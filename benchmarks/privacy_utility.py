"""Privacy/utility sweep: epsilon x mechanism x protocol on Financial PhraseBank (10 parties, Dirichlet).

Utility: accuracy, macro-F1, eval loss of the final global model. Empirical leakage:
- canary exposure (Carlini et al. 2019): `--canaries` random secret digit strings are inserted
  (`--canary-repeats` times each) into party-00's data; exposure = log2|R| - log2(rank of the canary's
  loss among |R| random candidates of the same format), averaged over canaries;
- loss-threshold membership inference AUC: per-example loss of training records (members) vs held-out
  records (non-members).
Needs the privacy integration (RootConfig.privacy). Outputs OUT/results.{json,md,png}.

    python benchmarks/privacy_utility.py --out /tmp/pu            # default size (CPU, ~20 min on a free box)
    python benchmarks/privacy_utility.py --out /tmp/pu --quick    # CI size
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch

DATA = Path(__file__).resolve().parents[1].parent / "shared/data/financial_phrasebank/all-data.csv"
MECHANISMS = ("none", "example", "user-central", "user-distributed")


def _canaries(k: int, seed: int, digits: int = 6) -> list[str]:
    rng = np.random.default_rng(seed)
    return ["".join(str(d) for d in rng.integers(0, 10, digits)) for _ in range(k)]


def _seq_loss(model, tokenizer, prompt: str, response: str, max_length: int) -> float:
    from securefed.training.batches import collate, tokenize_example
    from securefed.training.dp_sgd import per_example_loss

    b = collate([tokenize_example(tokenizer, prompt, response, max_length)], tokenizer.pad_token_id)
    with torch.no_grad():
        return float(per_example_loss(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits,
                                      b["labels"])[0])


def auc(pos: list[float], neg: list[float]) -> float:
    """P(score(member) > score(non-member)) with ties 1/2; score = -loss."""
    p, n = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
    return float(((p > n) + 0.5 * (p == n)).mean())


def run_cell(args, mechanism: str, eps: float, protocol: str, tmp: Path) -> dict:
    import securefed.simulation.runner as runner
    from securefed.config import load_config
    from securefed.models.adapter import set_adapter_state
    from securefed.training.batches import tokenize_example

    canaries = _canaries(args.canaries, 1)
    prompt = "The secret code is"
    sets = [f"parties={args.parties}", f"rounds={args.rounds}", f"training.max_steps={args.steps}",
            "training.batch_size=8", "training.max_length=64", f"data.source={str(DATA)!r}",
            "data.preset='financial-phrasebank'", "data.partition.method=dirichlet", "data.partition.alpha=0.5",
            f"data.max_examples={args.examples}", "data.eval_max=100", "evaluation.max_examples=100",
            f"model.name_or_path={args.model!r}", "lora.target_modules='all-linear'", "training.lr=3e-3",
            f"aggregation.protocol={protocol}", f"privacy.mechanism={mechanism}"]
    if protocol == "secagg":
        sets += ["aggregation.secagg.clip=1.0"]
    if mechanism != "none":
        sets += [f"privacy.target_epsilon={eps}" if math.isfinite(eps) else "privacy.noise_multiplier=0.0"]
        if mechanism != "example" and not math.isfinite(eps):
            sets[-1] = "privacy.noise_multiplier=1e-6"  # clipping only
    cfg = load_config(None, sets)
    built = {}
    original = runner.build_world

    def with_canaries(c):
        world = original(c)
        extra = [tokenize_example(world.tokenizer, prompt, s, c.training.max_length) for s in canaries]
        pid = world.party_ids[0]
        world.party_data[pid] = world.party_data[pid] + extra * args.canary_repeats
        built["world"] = world
        return world

    runner.build_world = with_canaries
    try:
        summary = runner.simulate(cfg, tmp / f"{mechanism}-{eps}-{protocol}")
    finally:
        runner.build_world = original
    world = built["world"]
    from peft import PeftModel  # noqa: F401  (the saved adapter is the final global model)
    final = json.loads((tmp / f"{mechanism}-{eps}-{protocol}" / "metrics.jsonl").read_text().splitlines()[-1])
    ckpt_adapter = tmp / f"{mechanism}-{eps}-{protocol}" / "adapter" / "adapter_model.safetensors"
    from safetensors.torch import load_file

    state = load_file(str(ckpt_adapter))
    set_adapter_state(world.model, {k: v for k, v in state.items()})
    model, tok, L = world.model, world.tokenizer, cfg.training.max_length
    refs = _canaries(args.references, 99)
    ref_losses = np.array([_seq_loss(model, tok, prompt, r, L) for r in refs])
    exposure = [math.log2(len(refs) + 1) - math.log2(1 + int((ref_losses < _seq_loss(model, tok, prompt, s, L)).sum()))
                for s in canaries]
    members = [e for p in world.party_ids for e in world.party_data[p][:20]]
    from securefed.training.batches import collate
    from securefed.training.dp_sgd import per_example_loss

    def losses(items):
        out = []
        for i in range(0, len(items), 16):
            b = collate(items[i : i + 16], tok.pad_token_id)
            with torch.no_grad():
                out += per_example_loss(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits,
                                        b["labels"]).tolist()
        return out

    nonmembers = [tokenize_example(tok, e.prompt, e.response, L) for e in world.evalset.examples]
    mia = auc([-x for x in losses(members[: len(nonmembers)])], [-x for x in losses(nonmembers)])
    return {"mechanism": mechanism, "epsilon": eps, "protocol": protocol, "accuracy": final.get("accuracy"),
            "macro_f1": final.get("macro_f1"), "eval_loss": final.get("eval_loss"),
            "epsilon_spent": final.get("dp_epsilon_max"), "exposure": float(np.mean(exposure)), "mia_auc": mia,
            "seconds": summary["seconds_this_run"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--model", default="default")
    a = ap.parse_args()
    quick = a.quick
    a.parties, a.rounds, a.steps = (10, 2, 2) if quick else (10, 5, 10)
    a.examples, a.canaries, a.canary_repeats, a.references = (300, 2, 4, 100) if quick else (2000, 5, 8, 1000)
    epsilons = (math.inf, 4.0) if quick else (math.inf, 8.0, 4.0, 2.0, 1.0)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for protocol in ("plain", "secagg"):
        for mech in MECHANISMS:
            for eps in (epsilons if mech != "none" else (math.inf,)):
                rows.append(run_cell(a, mech, eps, protocol, out / "runs"))
                (out / "results.json").write_text(json.dumps(rows, indent=2))
    cols = ["protocol", "mechanism", "epsilon", "epsilon_spent", "accuracy", "macro_f1", "eval_loss", "exposure",
            "mia_auc"]
    md = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(f"{r[c]:.3g}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |"
           for r in rows]
    (out / "results.md").write_text("\n".join(md) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for (proto, mech) in {(r["protocol"], r["mechanism"]) for r in rows}:
        pts = sorted((r["epsilon"] if math.isfinite(r["epsilon"]) else 16.0, r) for r in rows
                     if r["protocol"] == proto and r["mechanism"] == mech)
        xs = [x for x, _ in pts]
        axes[0].plot(xs, [r["accuracy"] or 0 for _, r in pts], marker="o", label=f"{mech}/{proto}")
        axes[1].plot(xs, [r["exposure"] for _, r in pts], marker="o", label=f"{mech}/{proto}")
    for ax, name in zip(axes, ("accuracy", "canary exposure (bits)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("target epsilon (16 = inf)")
        ax.set_ylabel(name)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "results.png", dpi=120)
    print("\n".join(md))


if __name__ == "__main__":
    main()
