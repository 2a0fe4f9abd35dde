"""`securefed export`: a run's adapter, optionally merged (safetensors) and as GGUF, with a model card,
written into a new folder that appears complete or not at all (securefed.atomic).

Layout of OUT:
  without --merge:  adapter_model.safetensors, adapter_config.json (PEFT, loadable on the base)
  with --merge:     config.json, model.safetensors, tokenizer files, chat template; adapter/ (PEFT)
  with --gguf:      <name>-<type>.gguf beside either
  always:           README.md (the model card), securefed_config.json
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from securefed.atomic import atomic_directory
from securefed.errors import UserError
from securefed.export.run import RunRecord, open_run

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")


@dataclass(frozen=True)
class ExportResult:
    out: Path
    files: tuple[str, ...]
    seconds: float


def base_name(model_path: str) -> str:
    """The base as the card names it: a hub id as is, a local folder or file by its name."""
    if model_path == "default":
        return "securefed-tiny-llama (embedded random-init test model)"
    local = model_path.startswith((".", "/", "~")) or Path(model_path).expanduser().exists()
    return Path(model_path).name if local else model_path


def base_license(model_path: str, source: dict) -> str | None:
    """The base's license where it says: GGUF metadata, or the `license:` line of a local card."""
    if "general.license" in source:
        return str(source["general.license"])
    card = Path(model_path).expanduser() / "README.md"
    if card.is_file():
        found = re.search(r"^license:\s*(\S+)", card.read_text(encoding="utf-8", errors="replace"), re.MULTILINE)
        if found:
            return found.group(1).strip("\"'")
    return None


def _copy_adapter(run: RunRecord, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name in ADAPTER_FILES:
        shutil.copy2(run.adapter_dir / name, dest / name)


def export_run(run_dir: str | Path, out: str | Path, *, adapter: str | Path | None = None, merge: bool = False,
               gguf_type: str | None = None, dtype: str = "auto", device: str = "cpu") -> ExportResult:
    import securefed
    from securefed.export.card import model_card
    from securefed.export.merge import DTYPES, checkpoint_dtype, ensure_chat_template, merged_model, save_merged
    from securefed.export.to_gguf import GGUF_TYPES, source_metadata, write_gguf

    t0 = time.perf_counter()
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out}: already exists and is not an empty folder; choose a new one")
    if gguf_type is not None and gguf_type not in GGUF_TYPES:
        raise UserError(f"--gguf-type {gguf_type!r}: choose one of {', '.join(GGUF_TYPES)}")
    if dtype != "auto" and dtype not in DTYPES:
        raise UserError(f"--dtype {dtype!r}: choose auto, {', '.join(DTYPES)}")
    run = open_run(run_dir, adapter)
    model_path = run.config.model.name_or_path
    source = source_metadata(model_path) if model_path.lower().endswith(".gguf") else {}
    gguf_files: list[str] = []
    added_template = False
    with atomic_directory(out) as tmp:
        if merge or gguf_type:
            model, tokenizer, base_dir = merged_model(run.config.model, run.adapter_dir, device)
            added_template = ensure_chat_template(tokenizer)
            target = DTYPES[dtype] if dtype != "auto" else checkpoint_dtype(base_dir)
            if gguf_type:  # from the fp32 merge (GGUF picks its own type per tensor); the writer reads
                scratch = Path(tempfile.mkdtemp(prefix=".gguf-src.", dir=tmp))  # config + tokenizer files
                model.config.save_pretrained(scratch)
                tokenizer.save_pretrained(scratch)
                gguf_files.append(f"{run.path.name}-{gguf_type}.gguf")
                write_gguf(model, scratch, tmp / gguf_files[-1], gguf_type, source, name=run.path.name)
                shutil.rmtree(scratch)
            if merge:
                save_merged(model, tokenizer, tmp, target)
            del model
        _copy_adapter(run, tmp / "adapter" if merge else tmp)
        (tmp / "securefed_config.json").write_text(run.config.to_json(), encoding="utf-8")
        card = model_card(run, base_name=base_name(model_path), license_=base_license(model_path, source),
                          merged=merge, gguf_files=gguf_files, chat_template_added=added_template,
                          version=securefed.__version__)
        (tmp / "README.md").write_text(card, encoding="utf-8")
        files = tuple(sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file()))
    return ExportResult(out, files, time.perf_counter() - t0)
