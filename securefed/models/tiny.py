"""The embedded default model: a tiny random-init causal LM and a byte-level BPE tokenizer, both built
locally (no hub access) and saved with `save_pretrained`, then loaded through the ordinary path.

Byte-level BPE means any text tokenizes (Financial PhraseBank included); the merges are learned on
the embedded default corpus so its words are a token or two each.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Iterable, Literal

import torch

Arch = Literal["llama", "gpt2", "qwen2"]
TINY_VERSION = "v2"  # bump when the recipe changes so caches are rebuilt
# With the usual 0.02 init a 64-wide random model cannot express a peaked next-token distribution
# (|logit| <= ~0.02*sqrt(64)*8 after the final norm), so LoRA could not teach it anything; a wider init
# lets the frozen head separate tokens.
INIT_RANGE = float(os.environ.get("SECUREFED_TINY_INIT", "0.15"))
SPECIAL = {"bos": "<s>", "eos": "</s>", "pad": "<pad>", "unk": "<unk>"}


def build_tokenizer(corpus: Iterable[str], vocab_size: int = 1024):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=SPECIAL["unk"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=SPECIAL["bos"],
        eos_token=SPECIAL["eos"],
        pad_token=SPECIAL["pad"],
        unk_token=SPECIAL["unk"],
    )


def build_model(arch: Arch, vocab_size: int, seed: int = 0, hidden: int = 64, layers: int = 2):
    """A random-init model of the given architecture; deterministic for a seed."""
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, Qwen2Config

    common = dict(vocab_size=vocab_size, bos_token_id=0, eos_token_id=1, pad_token_id=2)
    if arch == "llama":
        cfg = LlamaConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                          num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                          tie_word_embeddings=False, initializer_range=INIT_RANGE, **common)
    elif arch == "qwen2":
        cfg = Qwen2Config(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                          initializer_range=INIT_RANGE, **common)
    elif arch == "gpt2":
        cfg = GPT2Config(n_embd=hidden, n_layer=layers, n_head=4, n_positions=512, initializer_range=INIT_RANGE,
                         **common)
    else:
        raise ValueError(f"unknown tiny architecture {arch!r}; choose llama, gpt2 or qwen2")
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(cfg)


def save_tiny(out_dir: str | os.PathLike, arch: Arch = "llama", corpus: Iterable[str] | None = None,
              seed: int = 0) -> Path:
    """Build and save a tiny model + tokenizer to `out_dir`; the directory appears atomically."""
    from securefed.atomic import atomic_directory

    if corpus is None:
        from securefed.data.loading import default_corpus

        corpus = default_corpus()
    tokenizer = build_tokenizer(corpus)
    model = build_model(arch, vocab_size=len(tokenizer), seed=seed)
    with atomic_directory(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return Path(out_dir)


def default_model_dir() -> Path:
    """Where the embedded default model lives: built once, then loaded like any local model."""
    root = Path(os.environ.get("SECUREFED_CACHE", Path.home() / ".cache" / "securefed"))
    path = root / f"tiny-llama-{TINY_VERSION}"
    if not (path / "config.json").exists():
        # Several processes (a server and its parties on one machine) may build it at once: each builds
        # under its own name and renames into place; renaming onto an existing directory fails, and the
        # loser discards its copy, so nobody ever sees a half-written or deleted model.
        tmp = save_tiny(path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}", "llama")
        try:
            os.rename(tmp, path)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not (path / "config.json").exists():
                raise
    return path
