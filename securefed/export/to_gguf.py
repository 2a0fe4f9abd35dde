"""A merged checkpoint as one GGUF file (llama.cpp's format) written with the `gguf` package.

It follows llama.cpp's own converter (convert_hf_to_gguf.py) where it applies: tensor names from
gguf's TensorNameMap, Llama's q/k rows permuted from HF's rotary layout (first half / second half of
each head) to GGML's interleaved pairs, the tied output head left out (llama.cpp reuses token_embd),
1-D tensors (norms) kept in float32, and a matrix whose rows do not split into the type's blocks kept
in f16. Tokenizer: byte-level BPE ("gpt2" in GGUF terms: tokens, types, merges, special ids, chat
template). Supported bases: Llama-family (llama, mistral) and qwen2; others raise a one-line error.

Quantized types are the ones gguf's numpy code can quantize (q8_0, q4_0, q4_1, q5_0, q5_1; the
K-quants need llama.cpp's own `llama-quantize` on the f16 file).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from securefed.errors import UserError

GGUF_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1")
ARCHS = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2"}  # HF model_type -> GGUF architecture
PERMUTE_QK = {"llama"}  # llama.cpp's llama graph applies rope to interleaved pairs


def _gguf() -> Any:
    try:
        import gguf
    except ImportError:
        raise UserError("--gguf needs the optional package gguf: pip install 'securefed[gguf]'") from None
    return gguf


def permute_rotary(w: np.ndarray, heads: int) -> np.ndarray:
    """HF Llama q/k rows (per head: first half, second half of the rotary dims) -> GGML's interleaved
    pairs; (heads*head_dim, in) -> same shape."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def source_metadata(base_file: str | Path | None) -> dict[str, Any]:
    """Fields worth carrying over from a GGUF base (license, names, the pre-tokenizer llama.cpp chose)."""
    if base_file is None or not str(base_file).lower().endswith(".gguf"):
        return {}
    reader = _gguf().GGUFReader(str(base_file))
    keep = ("general.license", "general.name", "general.basename", "general.organization", "tokenizer.ggml.pre")
    return {k: reader.fields[k].contents() for k in keep if k in reader.fields}


def _tokens(model_dir: Path, vocab_size: int) -> tuple[list[str], list[int]]:
    """Token strings by id (byte-level BPE, as tokenizer.json stores them) and GGUF token types."""
    gguf = _gguf()
    try:
        spec = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        raise UserError(f"{model_dir}: GGUF export needs a tokenizer.json (a fast byte-level BPE tokenizer)") from None
    model = spec.get("model", {})
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        raise UserError("GGUF export supports byte-level BPE tokenizers (GPT-2, Llama-3, Qwen2, SmolLM); this base's "
                        f"tokenizer is {model.get('type')}{' with byte fallback' if model.get('byte_fallback') else ''}")
    by_id = {i: t for t, i in model["vocab"].items()}
    kinds = {i: gguf.TokenType.NORMAL for i in by_id}
    for added in spec.get("added_tokens", []):
        by_id[added["id"]] = added["content"]
        kinds[added["id"]] = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
    tokens, types = [], []
    for i in range(vocab_size):  # the embedding may be padded past the tokenizer: llama.cpp pads the same way
        tokens.append(by_id.get(i, f"[PAD{i}]"))
        types.append(int(kinds.get(i, gguf.TokenType.UNUSED)))
    return tokens, types


def _pre_tokenizer(model_dir: Path) -> str:
    """llama.cpp's name for how text is split before BPE. GPT-2's regex (a bare ByteLevel pre-tokenizer,
    the tiny model's) is "gpt-2"; llama.cpp's converter recognises other tokenizers by hashing them
    against its own table, which the gguf package does not ship, so those are written as "gpt-2" with
    a warning (transformers' GGUF loader does not read this field; llama.cpp would split differently)."""
    import warnings

    spec = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    pre = spec.get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"
    warnings.warn(f"GGUF export: pre-tokenizer {pre.get('type')!r} written as llama.cpp's 'gpt-2'; "
                  "llama.cpp may split some text differently than transformers", stacklevel=3)
    return "gpt-2"


def _tensors(state: dict[str, Any], config: dict[str, Any], arch: str) -> Iterable[tuple[str, np.ndarray]]:
    gguf = _gguf()
    n_layers = config["num_hidden_layers"]
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], n_layers)
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]
    for hf_name, tensor in state.items():
        if hf_name == "lm_head.weight" and config.get("tie_word_embeddings", False):
            continue  # tied: llama.cpp reads the output head from token_embd
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise UserError(f"GGUF export: no GGUF name for tensor {hf_name!r} of a {arch} model")
        data = tensor.float().numpy()
        if arch in PERMUTE_QK and hf_name.endswith("q_proj.weight"):
            data = permute_rotary(data, heads)
        elif arch in PERMUTE_QK and hf_name.endswith("k_proj.weight"):
            data = permute_rotary(data, kv_heads)
        yield name, data


def _encode(gguf: Any, name: str, data: np.ndarray, qtype: str) -> tuple[np.ndarray, Any]:
    """(bytes or floats, GGML type) of one tensor under the requested file type."""
    if data.ndim == 1 or qtype == "f32":
        return data.astype(np.float32), gguf.GGMLQuantizationType.F32
    target = gguf.GGMLQuantizationType[qtype.upper()]
    block = gguf.GGML_QUANT_SIZES[target][0]
    if data.shape[-1] % block:
        target = gguf.GGMLQuantizationType.F16  # rows do not split into blocks: llama.cpp's fallback too
    if target == gguf.GGMLQuantizationType.F16:
        return data.astype(np.float16), target
    return gguf.quants.quantize(data, target), target


def write_gguf(model: Any, model_dir: Path, out_file: Path, qtype: str = "f16",
               source: dict[str, Any] | None = None, name: str | None = None) -> None:
    """Write `model` (a merged transformers model saved in `model_dir` with its tokenizer) to `out_file`."""
    gguf = _gguf()
    if qtype not in GGUF_TYPES:
        raise UserError(f"--gguf-type {qtype!r}: choose one of {', '.join(GGUF_TYPES)}")
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    arch = ARCHS.get(config.get("model_type", ""))
    if arch is None:
        raise UserError(f"GGUF export supports {', '.join(sorted(ARCHS))} models; this base is "
                        f"{config.get('model_type')!r} (export --merge gives safetensors for any architecture)")
    source = source or {}
    writer = gguf.GGUFWriter(str(out_file), arch)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name or str(source.get("general.name", model_dir.name)))
    if "general.license" in source:
        writer.add_license(str(source["general.license"]))
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config.get("num_key_value_heads") or config["num_attention_heads"])
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float((config.get("rope_parameters") or {}).get("rope_theta")
                                    or config.get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
    writer.add_vocab_size(config["vocab_size"])
    writer.add_file_type(int(gguf.LlamaFileType.ALL_F32 if qtype == "f32" else
                             getattr(gguf.LlamaFileType, f"MOSTLY_{qtype.upper()}")))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    tokens, types = _tokens(model_dir, config["vocab_size"])
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(str(source.get("tokenizer.ggml.pre") or _pre_tokenizer(model_dir)))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=len(tokens)).add_to_gguf(writer, quiet=True)

    for tname, data in _tensors(model.state_dict(), config, arch):
        encoded, ggml_type = _encode(gguf, tname, data, qtype)
        writer.add_tensor(tname, encoded, raw_dtype=ggml_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
