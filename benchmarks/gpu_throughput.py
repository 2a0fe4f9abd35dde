"""LoRA fine-tuning throughput of a 7B-shape model (random init): useful tokens/s and MFU for the memory
and speed options, side by side in one process.

    python -m benchmarks.gpu_throughput --device cuda                  # Llama-2-7B shape, one GPU
    python -m benchmarks.gpu_throughput --shape toy --device cpu --quick  # seconds on CPU (CI smoke test)

Cases (each: a warm-up step, then --steps timed optimizer steps of `train_local`, LoRA r 16 on q/v):
  padded | packed                 -- training.packing (padding-free rows, per-example attention)
  bf16 base | 4-bit NF4 base      -- model.quantization (bitsandbytes, double quant); fp32 base on CPU
  +/- gradient checkpointing      -- training.gradient_checkpointing
  DP-SGD, ghost clipping          -- example-level DP (Opacus fast gradient clipping; padded rows,
                                     Poisson batches of expected size --batch; noise multiplier 1)
  fixed length, eager | + torch.compile | + CUDA graphs (compile mode "reduce-overhead", CUDA only)
                                  -- every row --fixed-len tokens, so one shape; three warm-up steps
                                     each; `vs_fixed_eager` is the ratio issue 25 asks for at 135M:
    python -m benchmarks.gpu_throughput --device cuda --shape smollm2-135m --batch 8 \
        --cases "fixed length,fixed length + compile,fixed length + CUDA graphs"
Examples have random token ids and lengths drawn log-uniformly in [--min-len, --max-len] (real SFT
data is ragged: that is what padding wastes); the first half of each is prompt (no loss).

Useful tokens = non-pad tokens (DP: expected batch x mean length, Opacus draws its own batches).
MFU = useful tokens/s x 4 N / peak FLOP/s, N = base parameters: a frozen base costs 2N forward + 2N for
the input-gradient backward per token (no weight gradients); LoRA, attention-score FLOPs and the
recomputation of checkpointing are not counted (model FLOPs, not hardware FLOPs). --peak-tflops
defaults to 989 (H100/H200 dense bf16) on CUDA; on CPU MFU is left out unless given.
A random-init base is saved once to a temp dir with a tokenizer so every case loads through the
ordinary `load_base` path (the 4-bit case quantizes at load, as it would for a real checkpoint).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

SHAPES = {  # Llama-2-7B, and a toy of the same family for CPU smoke tests
    "7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096),
    "toy": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=4, vocab_size=1024, max_position_embeddings=512),
    # SmolLM2-135M-Instruct's architecture (its config.json), for speed figures where its weights cannot
    # go: speed does not depend on the weights' values, so random ones give the same tokens/s
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, max_position_embeddings=8192,
                         tie_word_embeddings=True),
    # SmolLM2-1.7B's architecture: big enough that weights, not the Python runtime, dominate a CPU
    # process's memory (llm_efficiency --random-shape; 135M cannot show QLoRA's memory saving on CPU)
    "smollm2-1.7b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32,
                         num_key_value_heads=32, vocab_size=49152, max_position_embeddings=8192,
                         tie_word_embeddings=True),
}
class Case(NamedTuple):
    name: str
    packing: bool
    quantization: str  # "none" | "4bit"
    checkpointing: bool
    dp: bool
    fixed: bool = False  # every row --fixed-len tokens (half prompt): one shape, what compile and CUDA graphs want
    compile: str = ""  # "" eager, else torch.compile's mode ("default"; "reduce-overhead" = CUDA graphs)


CASES = [
    Case("padded", False, "none", False, False),
    Case("packed", True, "none", False, False),
    Case("packed + grad ckpt", True, "none", True, False),
    Case("packed 4-bit", True, "4bit", False, False),
    Case("packed 4-bit + grad ckpt", True, "4bit", True, False),
    Case("DP-SGD ghost (padded)", False, "none", False, True),
    # A small model's step is launch-bound on a GPU (SmolLM2-135M: ~170 ms a step, issue 25): compiling
    # fuses kernels, CUDA graphs replay the whole step's launches at once. Compared on one fixed shape.
    Case("fixed length", False, "none", False, False, fixed=True),
    Case("fixed length + compile", False, "none", False, False, fixed=True, compile="default"),
    Case("fixed length + CUDA graphs", False, "none", False, False, fixed=True, compile="reduce-overhead"),
]


def fpb_train_items(data: str, tokenizer, max_length: int) -> list:
    """Financial PhraseBank's training rows, rendered with the tokenizer's chat template, tokenized."""
    from securefed.data.chat import render_loaded
    from securefed.data.config import DataConfig
    from securefed.data.loading import load_examples
    from securefed.training.batches import tokenize_all

    loaded = render_loaded(load_examples(DataConfig(source=data, preset="financial-phrasebank"), seed=0),
                           tokenizer, "auto")
    return tokenize_all(tokenizer, loaded.train, max_length)


def save_random_base(shape: str, dtype, out: Path, device: str = "cpu") -> int:
    """A random-init Llama of `shape` saved with a tokenizer; returns its parameter count."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    from securefed.models.tiny import default_model_dir

    torch.manual_seed(0)
    cfg = LlamaConfig(**{"tie_word_embeddings": False, **SHAPES[shape]}, bos_token_id=0, eos_token_id=1, pad_token_id=2)
    with torch.device(device):  # random init of 7B: seconds on a GPU, minutes on a CPU
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(default_model_dir()).save_pretrained(out)
    n = sum(p.numel() for p in model.parameters())
    del model
    if device != "cpu":
        torch.cuda.empty_cache()
    return n


def examples(n: int, lo: int, hi: int, vocab: int, seed: int = 0, rows: list | None = None):
    """n examples of random ids: lengths log-uniform in [lo, hi] with the first half prompt, or, given
    `rows` ([length, prompt length] pairs of a real dataset, see --lengths), drawn from those."""
    from securefed.training.batches import IGNORE, Tokenized

    rng = np.random.default_rng(seed)
    if rows:
        shapes = [rows[j] for j in rng.integers(0, len(rows), n)]
    else:
        shapes = [(int(x), int(x) // 2) for x in np.exp(rng.uniform(np.log(lo), np.log(hi), n))]
    out = []
    for length, prompt in shapes:
        ids = rng.integers(3, vocab, length).tolist()
        out.append(Tokenized(tuple(ids), tuple([IGNORE] * prompt + ids[prompt:])))
    return out


def write_lengths(model: str, data: str, max_length: int, out: Path) -> None:
    """[length, prompt length] of every chat-rendered Financial PhraseBank training row, tokenized by
    `model`'s tokenizer: what --lengths replays on a machine the data and weights cannot reach."""
    from transformers import AutoTokenizer

    from securefed.models.sources import resolve_path
    from securefed.training.batches import IGNORE

    tokenizer = AutoTokenizer.from_pretrained(resolve_path(model))  # a .gguf: its cached conversion
    rows = [[len(t.input_ids), next((i for i, y in enumerate(t.labels) if y != IGNORE), len(t.labels))]
            for t in fpb_train_items(data, tokenizer, max_length)]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": model, "data": data, "max_length": max_length, "rows": rows}))
    print(f"{len(rows)} rows, mean length {np.mean([r[0] for r in rows]):.1f} -> {out}")


def run_case(args, path: Path, n_params: int, case) -> dict:
    import torch

    from securefed import algorithms
    from securefed.algorithms.base import ClientContext
    from securefed.algorithms.config import AlgorithmConfig
    from securefed.models.adapter import get_adapter_state
    from securefed.models.config import LoraConfig, ModelConfig
    from securefed.models.loading import attach_lora, load_base
    from securefed.training.batches import collate, collate_packed, draw_batches, useful_tokens
    from securefed.training.config import TrainingConfig
    from securefed.training.dp_sgd import DPSGDParams, train_local_dp
    from securefed.training.sft import train_local

    name, packing, quant, ckpt, dp = case.name, case.packing, case.quantization, case.checkpointing, case.dp
    base, tokenizer, device = load_base(ModelConfig(name_or_path=str(path), device=args.device, quantization=quant))
    model = attach_lora(base, LoraConfig(r=16, alpha=32, dropout=0.0, target_modules=["q_proj", "v_proj"]),
                        gradient_checkpointing=ckpt)
    if case.compile:  # in place: parameter names (the adapter's keys) stay as they are
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        model.compile(mode=case.compile, backend=args.compile_backend)
    lo, hi = (args.fixed_len, args.fixed_len) if case.fixed else (args.min_len, args.max_len)
    items = examples(args.batch * (args.steps + 1) * 4, lo, hi, SHAPES[args.shape]["vocab_size"],
                     rows=None if case.fixed else args.rows)
    algorithm = algorithms.create(AlgorithmConfig(name="fedavg"), 1)
    initial = get_adapter_state(model)
    ctx, state = ClientContext(global_params=initial, server_control=None), algorithm.init_client(initial)
    cfg = TrainingConfig(max_steps=args.steps, batch_size=args.batch, lr=1e-4, max_length=args.max_len,
                         packing=packing, gradient_checkpointing=ckpt)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if dp:
        params = DPSGDParams(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=args.batch / len(items),
                             grad_sample_mode="ghost")
        train_local_dp(model, items, 2, cfg.model_copy(update={"max_steps": 1}), 1e-4, algorithm, ctx, state,
                       device, params)  # warm-up
        sync()
        t = time.perf_counter()
        out = train_local_dp(model, items, 2, cfg, 1e-4, algorithm, ctx, state, device, params)
        sync()
        seconds = time.perf_counter() - t
        tokens = out.mean_batch * out.steps * float(np.mean([len(x.input_ids) for x in items]))
    else:
        rng = np.random.default_rng(1)
        collate_fn = collate_packed if packing else collate
        # Warm-up steps, untimed: one (eager), three when compiled (trace + compile, then CUDA graphs
        # record on the second call and replay from the third).
        warm = 3 if case.fixed else 1  # the eager fixed-length case too, so the three compare alike
        batches = draw_batches(items, args.steps + warm, args.batch, rng, 2, collate_fn=collate_fn)
        train_local(model, batches[:warm], cfg.model_copy(update={"max_steps": warm}), 1e-4, algorithm, ctx, state,
                    device)
        sync()
        t = time.perf_counter()
        train_local(model, batches[warm:], cfg, 1e-4, algorithm, ctx, state, device)
        sync()
        seconds = time.perf_counter() - t
        tokens = sum(useful_tokens(b) for b in batches[warm:])
    rate = tokens / seconds
    peak = args.peak_tflops if args.peak_tflops else (989.0 if device.type == "cuda" else None)
    row = {"case": name, "useful_tokens_per_s": rate, "seconds": seconds, "useful_tokens": tokens,
           "mfu": rate * 4 * n_params / (peak * 1e12) if peak else None,
           "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None}
    if case.compile:  # evidence that it compiled, and how many pieces (each graph break splits the step)
        stats = torch._dynamo.utils.counters
        row.update(compiled_graphs=int(stats["stats"]["unique_graphs"]),
                   graph_breaks=int(sum(stats["graph_break"].values())))
    del model, base
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="7b")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--min-len", type=int, default=64)
    ap.add_argument("--max-len", type=int, default=1024)
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--fixed-len", type=int, default=128, help="row length of the fixed-length cases (the 135M "
                    "recipe's training.max_length)")
    ap.add_argument("--compile-backend", default="inductor",
                    help="torch.compile backend of the compile cases (CI: eager, which traces but does not codegen)")
    ap.add_argument("--cases", default="", help="comma list of case names (default: all)")
    ap.add_argument("--quick", action="store_true", help="toy lengths and 2 steps (CI)")
    ap.add_argument("--lengths", type=Path, help="JSON of real [length, prompt length] rows (--write-lengths) "
                    "instead of log-uniform lengths")
    ap.add_argument("--write-lengths", type=Path, metavar="OUT",
                    help="write FPB's chat-rendered row lengths under --model's tokenizer to OUT and stop")
    ap.add_argument("--model", help="with --write-lengths: the model whose tokenizer and chat template to use")
    ap.add_argument("--data", help="with --write-lengths: Financial PhraseBank's all-data.csv")
    ap.add_argument("--out", default="bench-out/gpu_throughput.json")
    args = ap.parse_args(argv)
    if args.write_lengths:
        if not (args.model and args.data):
            ap.error("--write-lengths needs --model and --data")
        write_lengths(args.model, args.data, args.max_len, args.write_lengths)
        return []
    try:
        args.rows = json.loads(args.lengths.read_text())["rows"] if args.lengths else None
    except (OSError, ValueError, KeyError, TypeError) as e:
        ap.error(f"--lengths {args.lengths}: not a lengths file from --write-lengths ({type(e).__name__}: {e})")
    if args.quick:
        args.steps, args.batch, args.min_len, args.max_len, args.fixed_len = 2, 4, 8, 48, 32
    import torch

    from securefed.models.loading import resolve_device, resolve_dtype

    wanted = [c for c in CASES if not args.cases or c.name in args.cases.split(",")]
    if resolve_device(args.device).type != "cuda" and any(c.compile == "reduce-overhead" for c in wanted):
        wanted = [c for c in wanted if c.compile != "reduce-overhead"]
        print("not on CUDA: the CUDA graphs case skipped")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        wanted = [c for c in wanted if c.quantization == "none"]
        print("bitsandbytes not installed: 4-bit cases skipped")
    dtype = resolve_dtype("auto", resolve_device(args.device))
    rows = []
    with tempfile.TemporaryDirectory(prefix="securefed-random-base-") as tmp:
        n_params = save_random_base(args.shape, dtype, Path(tmp), str(resolve_device(args.device)))
        print(f"{args.shape}: {n_params / 1e9:.2f} B parameters, base dtype {dtype} (4-bit cases: NF4)", flush=True)
        for case in wanted:
            rows.append(run_case(args, Path(tmp), n_params, case))
            r = rows[-1]
            mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
            per_step = 1000 * r["seconds"] / args.steps
            print(f"{r['case']:28s} {r['useful_tokens_per_s']:10.1f} useful tok/s  {per_step:8.1f} ms/step  MFU {mfu}",
                  flush=True)
    base_rate = rows[0]["useful_tokens_per_s"]
    fixed = next((r["useful_tokens_per_s"] for r in rows if r["case"] == "fixed length"), None)
    for r in rows:
        r["vs_padded"] = r["useful_tokens_per_s"] / base_rate
        if fixed and r["case"].startswith("fixed length"):
            r["vs_fixed_eager"] = r["useful_tokens_per_s"] / fixed  # what compiling / CUDA graphs buy
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"shape": args.shape, "device": str(resolve_device(args.device)),
                               "torch": torch.__version__, "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "rows"},
                               "results": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()
