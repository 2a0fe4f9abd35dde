"""Privacy/utility sweep: epsilon x mechanism x protocol on Financial PhraseBank (10 parties, Dirichlet).

Utility: accuracy, macro-F1, eval loss of the final global model. Empirical leakage:
- canary exposure (Carlini et al. 2019): `--canaries` random secret digit strings are inserted
  (`--canary-repeats` times each) into party-00's data; exposure = log2|R| - log2(rank of the canary's
  loss among |R| random candidates of the same format), averaged over canaries. Ranking at random
  gives about 1/ln 2 = 1.44 bits ("chance"); the maximum is log2|R|;
- loss-threshold membership inference AUC: per-example loss of training records (members, drawn
  evenly over the parties, canaries excluded) vs held-out records (non-members); 0.5 is chance.
- one-run audit (Steinke, Nasr & Jagielski 2023): `--audit-canaries` m more canaries, each put in
  party-00 once with probability 1/2; guess "in" for the m/4 lowest-loss and "out" for the m/4
  highest-loss (fixed in advance); the count of right guesses gives a 95% lower bound on epsilon,
  shown next to the reported epsilon and its recomputation by dp-accounting (epsilon_independent).
  The bound is held against `epsilon_audit_reference`, the epsilon for the neighbouring relation a
  canary actually spans (`audit_neighbouring`): under example-level DP one canary is one record
  added or removed (the reported epsilon); under user-level DP a canary changes party-00's clipped
  update from u to u' with ||u - u'|| <= 2C, a replace-one neighbour at twice the sensitivity the
  accountant assumes (add/remove one party, C), so the reference is the epsilon at doubled
  sensitivity (privacy.audit.audit_reference_epsilon), e.g. 18.8 for a target-8 cell.
Rows: mechanism "none" once (epsilon inf), each DP mechanism at every epsilon (inf = clipping only),
for each protocol. Outputs OUT/results.{json,md,png} and OUT/runs/<cell>/ (each simulation's files).

    python benchmarks/privacy_utility.py --out /tmp/pu            # default size: 32 cells, 5 rounds x 10 steps
    python benchmarks/privacy_utility.py --out /tmp/pu --quick    # CI size: 14 cells, 2 rounds x 2 steps

On a contended 2-core box the protocols can run as two processes and be merged (no training); give
each process one thread (OMP_NUM_THREADS=1), or torch's two intra-op threads per process oversubscribe
the cores and a round takes ~10x longer:

    export OMP_NUM_THREADS=1
    python benchmarks/privacy_utility.py --out /tmp/pu/plain --protocols plain &
    python benchmarks/privacy_utility.py --out /tmp/pu/secagg --protocols secagg; wait
    python benchmarks/privacy_utility.py --out /tmp/pu --merge /tmp/pu/plain,/tmp/pu/secagg

Clip norms are benchmark settings, not the library defaults: the user-level update clip is 1.0 (this
model's per-party update norms are O(1); at the library's 0.1 even clipping-only does not learn in
5 rounds), the example-level per-example clip is privacy.max_grad_norm's default 1.0.

LoRA rank 1 and local lr 1e-2 (every cell, DP or not) are chosen for DP. The Gaussian noise is
isotropic over the adapter's d parameters while the clipped signal has norm <= C, so the
noise/signal ratio grows as sqrt(d): rank 8 on all linear layers of the tiny model (d = 17408) left
every finite epsilon at accuracy 0 and eval loss ~ the untrained model's (a cliff); rank 1 (d =
2176) keeps no-DP accuracy and cuts the ratio by sqrt(8). The noise barely harms the adapter (eval
loss stays near the untrained ~6.9), so the limit is too little signal, not a random walk: a larger
lr (1e-2 vs 3e-3) moves further along the signal (example-level eps 8: accuracy 0 -> 0.66 with rank
1). Batch 32 for DP-SGD also helped (rank 8, eps 8: eval loss 6.7 -> 5.9) but quadruples its
runtime. User-level DP with 10 parties stays noise-dominated: noise on the mean has norm
z*C*sqrt(d)/10 ~ 6.7 C per round at eps 8 vs a signal <= C, whatever C; at eps 8 server_lr 0.3,
local lr 3e-2, update clip 0.3 or 3 and 20 rounds x 3 steps were no better (eval loss only). With
`--parties 100 --examples 4000` the noise on the mean is ten times smaller and user-level DP keeps
utility at eps 8-4 (docs/results.md). `--set`
overrides any config key for all cells or per mechanism, e.g. `--set
example:training.batch_size=32`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch

DATA = Path(__file__).resolve().parents[1].parent / "shared/data/financial_phrasebank/all-data.csv"
MECHANISMS = ("none", "example", "user-central", "user-distributed")
PROTOCOLS = ("plain", "secagg")
CANARY_PROMPT = "The secret code is"
INF_X = 16.0  # where epsilon = inf sits on the plot's log2 axis
EPS_PANELS = ("epsilon_audit_lb", "epsilon_vs_server")


def _canaries(k: int, seed: int, digits: int = 6, exclude: frozenset[str] = frozenset()) -> list[str]:
    rng = np.random.default_rng(seed)
    out: list[str] = []
    while len(out) < k:
        s = "".join(str(d) for d in rng.integers(0, 10, digits))
        if s not in exclude and s not in out:
            out.append(s)
    return out


def _losses(model, pad_id: int, items, batch: int = 32) -> np.ndarray:
    """Per-example mean response-token loss of tokenized items under the model (eval mode)."""
    from securefed.training.batches import collate
    from securefed.training.dp_sgd import per_example_loss

    was_training = model.training
    model.eval()
    out: list[float] = []
    try:
        for i in range(0, len(items), batch):
            b = collate(items[i : i + batch], pad_id)
            with torch.no_grad():
                logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
                out += per_example_loss(logits, b["labels"]).tolist()
    finally:
        model.train(was_training)
    return np.asarray(out)


def _response(t) -> tuple[int, ...]:
    from securefed.training.batches import IGNORE

    return tuple(x for x in t.labels if x != IGNORE)


def _matched_members(pool: list, nonmembers: list, seed: int) -> list:
    """Training records with the same response (label) mix as the non-members, drawn at random.

    On a 3-class task a loss threshold mostly separates labels (the model is surer of the majority
    class), so members and non-members with different label mixes would give an AUC far from 0.5
    with no memorization at all; matching the mix leaves only the membership signal."""
    rng = np.random.default_rng(seed)
    by_key: dict[tuple, list[int]] = {}
    for i, t in enumerate(pool):
        by_key.setdefault(_response(t), []).append(i)
    need: dict[tuple, int] = {}
    for t in nonmembers:
        need[_response(t)] = need.get(_response(t), 0) + 1
    chosen: list[int] = []
    for key, k in need.items():
        have = by_key.get(key, [])
        chosen += rng.choice(have, size=min(k, len(have)), replace=False).tolist() if have else []
    rest = sorted(set(range(len(pool))) - set(chosen))  # top up (a label absent from training) at random
    short = min(len(nonmembers), len(pool)) - len(chosen)
    if short > 0:
        chosen += rng.choice(rest, size=short, replace=False).tolist()
    return [pool[i] for i in chosen]


def auc(pos: list[float], neg: list[float]) -> float:
    """P(score(member) > score(non-member)) with ties 1/2 (scores: higher = more member-like)."""
    p, n = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
    return float(((p > n) + 0.5 * (p == n)).mean())


def exposure(canary_loss: float, ref_losses: np.ndarray) -> float:
    """log2 |R| - log2 rank, with the canary ranked among itself and the references (rank 1 = lowest loss)."""
    rank = 1 + int((ref_losses < canary_loss).sum())
    return math.log2(len(ref_losses) + 1) - math.log2(rank)


def _overrides(args, mechanism: str, eps: float, protocol: str) -> list[str]:
    sets = [f"parties={args.parties}", f"rounds={args.rounds}", f"seed={args.seed}",
            f"training.max_steps={args.steps}", f"training.batch_size={args.batch_size}", "training.max_length=64",
            f"training.lr={args.lr}", f"data.source={str(args.data)!r}", "data.preset='financial-phrasebank'",
            "data.partition.method=dirichlet", f"data.partition.alpha={args.alpha}",
            f"data.max_examples={args.examples}", f"data.eval_max={args.eval_examples}",
            f"evaluation.max_examples={args.eval_examples}", f"evaluation.every={args.rounds}",
            f"model.name_or_path={args.model!r}", "lora.target_modules='all-linear'", f"lora.r={args.lora_r}",
            f"aggregation.protocol={protocol}", f"privacy.mechanism={mechanism}"]
    if mechanism != "none":
        sets += [f"privacy.max_grad_norm={args.max_grad_norm}", f"privacy.update_clip_norm={args.update_clip}"]
    if protocol == "secagg":
        sets.append("aggregation.secagg.clip=1.0")  # a power of two, as user-distributed needs
    if protocol == "plain" and mechanism == "user-distributed":
        # the server sees every noisy share: allowed only explicitly, and its per-share epsilon reported
        sets.append("privacy.distributed_over_plain=true")
    if mechanism != "none":
        if math.isfinite(eps):
            sets.append(f"privacy.target_epsilon={eps}")
        elif mechanism == "user-distributed":
            sets.append("privacy.noise_multiplier=1e-6")  # clipping (and quantization) only; must be > 0
        else:
            sets.append("privacy.noise_multiplier=0.0")  # clipping only
    for spec in args.set or []:  # [MECHANISM[,MECHANISM]:]key=value, applied last
        head, _, rest = spec.partition(":")
        if "=" in head or not rest:
            sets.append(spec)
        elif mechanism in head.split(","):
            sets.append(rest)
    return sets


def run_cell(args, mechanism: str, eps: float, protocol: str, runs: Path) -> dict:
    import securefed.simulation.runner as runner
    from securefed.config import load_config
    from securefed.models.adapter import set_adapter_state
    from securefed.privacy.audit import (audit_reference_epsilon, independent_epsilon, ledger_from_rows,
                                         one_run_lower_bound)
    from securefed.privacy.engine import build_engine
    from securefed.training.batches import tokenize_example

    canaries = _canaries(args.canaries, 1)
    # One-run audit (Steinke et al. 2023): m more canaries of the same format, each in party-00's data
    # once with probability 1/2 (coins fixed before training; the auditor knows them).
    audit = _canaries(args.audit_canaries, 2, exclude=frozenset(canaries))
    coins = np.random.default_rng(args.seed + 1000).random(len(audit)) < 0.5
    cfg = load_config(None, _overrides(args, mechanism, eps, protocol))
    name = f"{protocol}-{mechanism}-eps{eps:g}"
    run_dir = runs / name
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run each time (simulate refuses an existing one)
    built: dict = {}
    original = runner.build_world

    def with_canaries(c):
        world = original(c)
        built["real"] = {p: list(d) for p, d in world.party_data.items()}  # before the canaries
        extra = [tokenize_example(world.tokenizer, CANARY_PROMPT, s, c.training.max_length) for s in canaries]
        audited = [tokenize_example(world.tokenizer, CANARY_PROMPT, s, c.training.max_length)
                   for s, inside in zip(audit, coins) if inside] * args.audit_repeats
        pid = world.party_ids[0]
        party_data = {**world.party_data, pid: world.party_data[pid] + extra * args.canary_repeats + audited}
        sizes = {p: len(d) for p, d in party_data.items()}
        # The canaries are party-00's records like any other: its weight and the DP engine's facts
        # (example-level sample rate q = batch / records) must count them.
        world = dataclasses.replace(world, party_data=party_data, party_weights=sizes,
                                    privacy=build_engine(c, world.party_ids, sizes, world.layout.size))
        built["world"] = world
        return world

    runner.build_world = with_canaries
    t0 = time.perf_counter()
    try:
        summary = runner.simulate(cfg, run_dir)
    finally:
        runner.build_world = original
    world = built["world"]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    final = rows[-1]
    from safetensors.torch import load_file

    # the saved adapter is the final global model
    set_adapter_state(world.model, load_file(str(run_dir / "adapter" / "adapter_model.safetensors")))
    model, tok, L = world.model, world.tokenizer, cfg.training.max_length

    refs = _canaries(args.references, 99, exclude=frozenset(canaries))
    ref_losses = _losses(model, tok.pad_token_id, [tokenize_example(tok, CANARY_PROMPT, r, L) for r in refs])
    can_losses = _losses(model, tok.pad_token_id, [tokenize_example(tok, CANARY_PROMPT, s, L) for s in canaries])
    exp = [exposure(float(c), ref_losses) for c in can_losses]

    nonmembers = [tokenize_example(tok, e.prompt, e.response, L) for e in world.evalset.examples]
    members = _matched_members([e for p in world.party_ids for e in built["real"][p]], nonmembers, seed=7)
    mia = auc(-_losses(model, tok.pad_token_id, members), -_losses(model, tok.pad_token_id, nonmembers))

    audit_losses = _losses(model, tok.pad_token_id, [tokenize_example(tok, CANARY_PROMPT, s, L) for s in audit])
    k = max(1, len(audit) // 4)  # guesses per side, fixed in advance (no search over thresholds)
    lb = one_run_lower_bound(-audit_losses, coins, k, cfg.privacy.target_delta) if len(audit) >= 2 else {}

    spends = final.get("dp_spends") or {}
    z = sorted({v[0] for v in spends.values()}) if spends else []
    stopped = sum(len(r.get("dp_stopped", [])) for r in rows)
    ledgers = ledger_from_rows(rows)
    indep = max((independent_epsilon(v, cfg.privacy.target_delta, cfg.privacy.accountant) for v in ledgers.values()),
                default=None)
    # the line the audit's lower bound is held against: party-00's epsilon for what one canary can change
    unit = "record" if mechanism == "example" else "user"
    audit_ref, relation = (audit_reference_epsilon(ledgers.get(world.party_ids[0], []), cfg.privacy.target_delta,
                                                   cfg.privacy.accountant, unit, args.audit_repeats)
                           if mechanism != "none" else (math.inf, "no DP"))
    return {"protocol": protocol, "mechanism": mechanism, "epsilon": eps,
            "epsilon_spent": final.get("dp_epsilon_max"), "epsilon_independent": indep,
            "epsilon_party00": (final.get("dp_epsilon") or {}).get(world.party_ids[0]),
            "epsilon_vs_server": final.get("dp_epsilon_vs_server_max"),
            "epsilon_audit_lb": lb.get("eps_lb"), "audit_guesses": lb.get("r"), "audit_correct": lb.get("v"),
            "epsilon_audit_reference": audit_ref, "audit_neighbouring": relation,
            "mia_members": len(members), "mia_nonmembers": len(nonmembers),
            "noise_multiplier": (z[-1] if z else None),
            "accuracy": final.get("accuracy"), "macro_f1": final.get("macro_f1"), "eval_loss": final.get("eval_loss"),
            "unparseable": final.get("unparseable"), "exposure": float(np.mean(exp)),
            "exposure_max": float(np.max(exp)), "mia_auc": mia, "party_rounds_stopped": stopped,
            "rounds": len(rows), "seconds": time.perf_counter() - t0, "sim_seconds": summary.get("seconds_this_run")}


def _json_safe(v):
    if isinstance(v, float) and not math.isfinite(v):
        return "inf" if v > 0 else ("-inf" if v < 0 else "nan")
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_json_safe(x) for x in v]
    return v


def _from_json(row: dict) -> dict:
    return {k: (float(v) if v in ("inf", "-inf", "nan") else v) for k, v in row.items()}


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if math.isinf(v):
            return "∞"
        return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.2e}"
    return str(v)


COLS = ["protocol", "mechanism", "epsilon", "epsilon_spent", "epsilon_independent", "epsilon_audit_lb",
        "epsilon_audit_reference", "epsilon_vs_server", "noise_multiplier", "accuracy", "macro_f1", "eval_loss", "exposure", "mia_auc", "seconds"]


def auc_chance_halfwidth(n_members: int, n_nonmembers: int) -> float:
    """95% half-width of the AUC of a random score around 0.5 (Mann-Whitney null: var = (n1+n2+1)/(12 n1 n2))."""
    if n_members < 1 or n_nonmembers < 1:
        return math.nan
    return 1.96 * math.sqrt((n_members + n_nonmembers + 1) / (12 * n_members * n_nonmembers))


def _mia_counts(rows: list[dict], fallback: int) -> tuple[int, int]:
    """The smallest member / non-member counts of the rows (the widest chance band), from the rows."""
    n1 = min((r.get("mia_members") or fallback for r in rows), default=fallback)
    n2 = min((r.get("mia_nonmembers") or fallback for r in rows), default=fallback)
    return int(n1), int(n2)


def markdown(rows: list[dict], references: int, mia_n: int = 100) -> str:
    n1, n2 = _mia_counts(rows, mia_n)
    md = ["| " + " | ".join(COLS) + " |", "|" + "---|" * len(COLS)]
    md += ["| " + " | ".join(_fmt(r.get(c)) for c in COLS) + " |" for r in rows]
    md += ["", f"exposure: bits, mean over canaries, {references} references (max {math.log2(references + 1):.2f}, "
           f"chance ~{1 / math.log(2):.2f}); mia_auc: loss-threshold membership inference (chance 0.5). "
           f"With {n1} members vs {n2} held-out non-members an AUC within ±{auc_chance_halfwidth(n1, n2):.3f} "
           "of 0.5 is indistinguishable from chance (95%, null hypothesis). "
           "epsilon = ∞ for a DP mechanism means clipping only (no noise); epsilon_spent is the largest "
           "per-party epsilon the accountant reports (delta 1e-5); epsilon_independent recomputes it with "
           "dp-accounting from the run's metrics; epsilon_audit_lb is the one-run empirical lower bound "
           "(Steinke et al. 2023, 95% confidence) from the audit canaries in party-00, to be held against "
           "epsilon_audit_reference: the reported epsilon for a record-level canary, the epsilon at doubled "
           "sensitivity for a user-level one (a canary changes party-00's clipped update by up to 2C, a "
           "replace-one neighbour; the accountant's C is add/remove one party); epsilon_vs_server: "
           "distributed over plain, what one noisy share costs a party against the server."]
    return "\n".join(md) + "\n"


def plot(rows: list[dict], path: Path, references: int, title: str = "", mia_n: int = 100) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"none": "black", "example": "tab:blue", "user-central": "tab:orange", "user-distributed": "tab:green"}
    styles = {"plain": ("-", "o"), "secagg": ("--", "s")}
    panels = [("accuracy", "accuracy"), ("macro_f1", "macro-F1"), ("eval_loss", "eval loss"),
              ("exposure", "canary exposure (bits)"), ("mia_auc", "membership-inference AUC"),
              ("epsilon_audit_lb", "one-run audit ε lower bound"), ("epsilon_vs_server", "ε vs server (one share)")]
    fig, grid = plt.subplots(2, 4, figsize=(20, 8.5))
    axes = grid.flatten()
    legend_ax = axes[-1]
    legend_ax.axis("off")
    for ax, (key, label) in zip(axes, panels):
        for mech in MECHANISMS:
            for proto in PROTOCOLS:
                pts = sorted(((r["epsilon"] if math.isfinite(r["epsilon"]) else INF_X), r[key]) for r in rows
                             if r["mechanism"] == mech and r["protocol"] == proto and r.get(key) is not None
                             and math.isfinite(r[key]) and (key not in EPS_PANELS or math.isfinite(r["epsilon"])))
                if not pts:
                    continue
                ls, mk = styles[proto]
                if mech == "none":  # one point (no DP): a horizontal reference line
                    ax.axhline(pts[0][1], color=colors[mech], ls=ls, lw=1, alpha=0.7, label=f"no DP / {proto}")
                    continue
                shift = 1.06 if proto == "secagg" else 1.0  # so equal plain/secagg points stay visible
                ax.plot([x * shift for x, _ in pts], [y for _, y in pts], ls=ls, marker=mk, color=colors[mech],
                        label=f"{mech} / {proto}", alpha=0.85)
        if key == "exposure":
            ax.axhline(1 / math.log(2), color="grey", ls=":", lw=1, label="chance")
            ax.set_ylim(0, math.log2(references + 1) * 1.05)
        if key == "mia_auc":
            ci = auc_chance_halfwidth(*_mia_counts(rows, mia_n))
            ax.axhline(0.5, color="grey", ls=":", lw=1, label="chance")
            ax.axhspan(0.5 - ci, 0.5 + ci, color="grey", alpha=0.15, label="MIA AUC: chance ±95%")
            lo, hi = ax.get_ylim()
            ax.set_ylim(min(lo, 0.5 - 1.5 * ci), max(hi, 0.5 + 1.5 * ci))
        if key == "epsilon_audit_lb":  # the line each cell's bound is held against (not the target)
            for mech in MECHANISMS[1:]:
                pts = sorted((r["epsilon"], r["epsilon_audit_reference"]) for r in rows if r["mechanism"] == mech
                             and math.isfinite(r["epsilon"]) and r.get("epsilon_audit_reference") is not None)
                if pts:
                    ax.plot(*zip(*pts), color=colors[mech], ls=":", marker="x", lw=1, alpha=0.7,
                            label=f"{mech}: audit reference ε")
        if key in EPS_PANELS:  # against the target itself (y = x); clipping-only cells have no finite epsilon
            finite = sorted({r["epsilon"] for r in rows if math.isfinite(r["epsilon"])})
            ax.plot(finite, finite, color="grey", ls=":", marker="_", lw=1, label="theoretical ε (target)")
            shown = (key, "epsilon_audit_reference") if key == "epsilon_audit_lb" else (key,)
            ax.set_ylim(0, max([*finite, *(r[k] for r in rows for k in shown if math.isfinite(r["epsilon"])
                                           and r.get(k) is not None and math.isfinite(r[k]))], default=1) * 1.1)
        ax.set_xscale("log", base=2)
        ticks = sorted({r["epsilon"] if math.isfinite(r["epsilon"]) else INF_X for r in rows})
        ax.set_xticks(ticks, [("∞" if t == INF_X else f"{t:g}") for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("target ε (∞ = no noise)")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    handles, labels = [], []
    for ax in axes[:len(panels)]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h), labels.append(lab)
    legend_ax.legend(handles, labels, loc="center", fontsize=9, frameon=False,
                     title="mechanism / protocol (solid: plain, dashed: secagg)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(rows: list[dict], out: Path, references: int, meta: dict) -> str:
    (out / "results.json").write_text(json.dumps(_json_safe({"config": meta, "rows": rows}), indent=2))
    md = markdown(rows, references, int(meta.get("eval_examples", 100)))
    (out / "results.md").write_text(md)
    if rows:
        title = (f"Financial PhraseBank, {meta['parties']} parties (Dirichlet α={meta['alpha']}), "
                 f"{meta['rounds']} rounds x {meta['steps']} local steps, batch {meta.get('batch_size', 8)}, "
                 f"lr {meta.get('lr', 3e-3):g}, model {meta['model']} + LoRA r={meta.get('lora_r', 8)}; {meta['canaries']} canaries x{meta['canary_repeats']} "
                 f"+ {meta.get('audit_canaries')} audit canaries (p = 1/2, x{meta.get('audit_repeats', 1)}) in party-00")
        plot(rows, out / "results.png", references, title, int(meta.get("eval_examples", 100)))
    return md


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true", help="CI size")
    ap.add_argument("--data", default=str(DATA), help="Financial PhraseBank all-data.csv")
    ap.add_argument("--model", default="default")
    ap.add_argument("--parties", type=int, default=10)
    ap.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration over labels")
    ap.add_argument("--rounds", type=int, help="default 5 (quick 2)")
    ap.add_argument("--steps", type=int, help="local steps per round; default 10 (quick 2)")
    ap.add_argument("--examples", type=int, help="train+eval rows; default 2000 (quick 300)")
    ap.add_argument("--eval-examples", type=int, default=100)
    ap.add_argument("--lr", type=float, default=1e-2, help="local AdamW lr (every cell)")
    ap.add_argument("--lora-r", type=int, default=1, help="LoRA rank (every cell); DP noise norm grows as sqrt(#params)")
    ap.add_argument("--batch-size", type=int, default=8, help="local batch (DP-SGD: expected Poisson batch)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-grad-norm", type=float, default=1.0, help="example-level DP-SGD per-example clip")
    ap.add_argument("--update-clip", type=float, default=1.0, help="user-level clip of a party's whole update")
    ap.add_argument("--set", action="append", metavar="[MECH[,MECH]:]KEY=VALUE",
                    help="extra config override (repeatable), for all cells or only the named mechanisms")
    ap.add_argument("--canaries", type=int, help="default 5 (quick 2)")
    ap.add_argument("--canary-repeats", type=int, help="default 16 (quick 4)")
    ap.add_argument("--audit-canaries", type=int, help="one-run audit canaries, each in party-00 once with "
                                                        "probability 1/2; default 128 (quick 32)")
    ap.add_argument("--audit-repeats", type=int, default=1,
                    help="copies of each included audit canary; > 1 audits a group of that many records: "
                         "under example-level DP compare with the group's epsilon, not the record's")
    ap.add_argument("--references", type=int, help="default 1000 (quick 100)")
    ap.add_argument("--epsilons", help="comma-separated, 'inf' allowed; default inf,8,4,2,1 (quick inf,4)")
    ap.add_argument("--mechanisms", default=",".join(MECHANISMS))
    ap.add_argument("--protocols", default=",".join(PROTOCOLS))
    ap.add_argument("--merge", help="comma-separated OUT dirs of earlier (e.g. per-protocol, parallel) runs: "
                                    "write their rows together to --out, no training")
    a = ap.parse_args()
    if a.merge:
        parts = [json.loads((Path(d) / "results.json").read_text()) for d in a.merge.split(",")]
        rows = [_from_json(r) for part in parts for r in part["rows"]]
        meta = parts[0]["config"] | {"merged_from": a.merge.split(","),
                                     "wall_seconds": max(p["config"].get("wall_seconds", 0) for p in parts)}
        Path(a.out).mkdir(parents=True, exist_ok=True)
        print(write_outputs(rows, Path(a.out), int(meta["references"]), meta))
        return
    q = a.quick
    for k, full, quick in [("rounds", 5, 2), ("steps", 10, 2), ("examples", 2000, 300), ("canaries", 5, 2),
                           ("canary_repeats", 16, 4), ("references", 1000, 100), ("audit_canaries", 128, 32)]:
        if getattr(a, k) is None:
            setattr(a, k, quick if q else full)
    epsilons = [float(e) for e in (a.epsilons or ("inf,4" if q else "inf,8,4,2,1")).split(",")]
    mechanisms = [m for m in a.mechanisms.split(",") if m]
    protocols = [p for p in a.protocols.split(",") if p]
    bad = set(mechanisms) - set(MECHANISMS) | set(protocols) - set(PROTOCOLS)
    if bad:
        ap.error(f"unknown mechanism/protocol: {sorted(bad)}")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {k: v for k, v in vars(a).items() if k != "out"} | {"epsilons": epsilons, "data": a.data}
    cells = [(p, m, e) for p in protocols for m in mechanisms
             for e in (epsilons if m != "none" else [math.inf])]  # (none, eps < inf) is meaningless
    rows: list[dict] = []
    t0 = time.perf_counter()
    for i, (proto, mech, eps) in enumerate(cells, 1):
        rows.append(run_cell(a, mech, eps, proto, out / "runs"))
        r = rows[-1]
        print(f"[{i}/{len(cells)}] {proto} {mech} eps={eps:g}: acc={_fmt(r['accuracy'])} f1={_fmt(r['macro_f1'])} "
              f"loss={_fmt(r['eval_loss'])} exposure={r['exposure']:.2f} auc={r['mia_auc']:.3f} "
              f"eps_spent={_fmt(r['epsilon_spent'])} indep={_fmt(r['epsilon_independent'])} "
              f"audit_lb={_fmt(r['epsilon_audit_lb'])} z={_fmt(r['noise_multiplier'])} ({r['seconds']:.0f}s, "
              f"total {time.perf_counter() - t0:.0f}s)", flush=True)
        write_outputs(rows, out, a.references, meta)  # partial results survive an interruption
    md = write_outputs(rows, out, a.references, meta | {"wall_seconds": time.perf_counter() - t0})
    print(md)
    print(f"wrote {out / 'results.md'}, {out / 'results.json'}, {out / 'results.png'} "
          f"in {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
