"""`securefed export`, `generate`, `chat` and `serve`: take a run's model home and use it.

Registered on the main app by cli/app.py (`register`); user errors print one line and exit 2 through
the app's own `fail`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, List, Optional

import typer
from rich.console import Console

from securefed.errors import UserError


def register(app: typer.Typer, fail: Callable[[str], None], err: Console) -> None:
    @app.command()
    def export(
        run: Path = typer.Argument(..., help="a run directory (config.json + adapter/)"),
        out: Path = typer.Option(..., "--out", "-o", help="new folder for the export"),
        merge: bool = typer.Option(False, "--merge", help="also merge the adapter into the base (safetensors "
                                   "loadable with AutoModelForCausalLM, tokenizer and chat template)"),
        gguf: bool = typer.Option(False, "--gguf", help="also write a GGUF file (llama.cpp, Ollama); type f16"),
        gguf_type: Optional[str] = typer.Option(None, "--gguf-type", help="GGUF tensor type: f32, f16, bf16, q8_0, "
                                                "q4_0, q4_1, q5_0, q5_1 (implies --gguf)"),
        adapter: Optional[Path] = typer.Option(None, "--adapter", "-a", help="another adapter of the run "
                                               "(e.g. RUN/local-adapters/<party>)"),
        dtype: str = typer.Option("auto", "--dtype", help="merged weights: auto (the base's own), float32, "
                                  "bfloat16, float16"),
        device: str = typer.Option("cpu", help="where to merge: cpu or cuda"),
    ) -> None:
        """Write a run's adapter (and with --merge / --gguf the merged model) with a model card."""
        from securefed.export.bundle import export_run

        try:
            result = export_run(run, out, adapter=adapter, merge=merge, gguf_type=gguf_type or ("f16" if gguf else None),
                                dtype=dtype, device=device)
        except UserError as e:
            fail(str(e))
        Console().print(f"exported {run} to {result.out} in {result.seconds:.1f} s: {', '.join(result.files)}",
                        highlight=False)

    @app.command()
    def generate(
        where: Path = typer.Argument(..., help="a run directory or an export folder"),
        prompt: List[str] = typer.Option(..., "--prompt", "-p", help="user message (repeat for several prompts)"),
        system: Optional[str] = typer.Option(None, "--system", help="system message"),
        adapter: Optional[Path] = typer.Option(None, "--adapter", "-a", help="another adapter of the run"),
        max_new_tokens: int = typer.Option(256, "--max-new-tokens", min=1),
        temperature: float = typer.Option(0.0, min=0.0, help="0: greedy"),
        top_p: float = typer.Option(1.0, "--top-p", min=0.0, max=1.0),
        seed: Optional[int] = typer.Option(None),
        device: str = typer.Option("auto", help="auto, cpu or cuda"),
    ) -> None:
        """Answer prompts with the model's chat template, streaming tokens to stdout."""
        from securefed.inference.generate import generate_reply
        from securefed.inference.load import load_for_inference

        try:
            loaded = load_for_inference(where, adapter, device)
        except UserError as e:
            fail(str(e))
        for text in prompt:
            messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
            generate_reply(loaded.model, loaded.tokenizer, messages, max_new_tokens=max_new_tokens,
                           temperature=temperature, top_p=top_p, seed=seed, on_text=_write, device=loaded.device)
            _write("\n")

    @app.command()
    def chat(
        where: Path = typer.Argument(..., help="a run directory or an export folder"),
        system: Optional[str] = typer.Option(None, "--system", help="system message"),
        adapter: Optional[Path] = typer.Option(None, "--adapter", "-a"),
        max_new_tokens: int = typer.Option(256, "--max-new-tokens", min=1),
        temperature: float = typer.Option(0.0, min=0.0),
        device: str = typer.Option("auto"),
    ) -> None:
        """Talk to the model: replies stream as they are generated; /reset clears, /exit (or Ctrl-D) quits."""
        from securefed.inference.generate import generate_reply
        from securefed.inference.load import load_for_inference

        try:
            loaded = load_for_inference(where, adapter, device)
        except UserError as e:
            fail(str(e))
        err.print(f"chatting with {loaded.source}; /reset clears the conversation, /exit quits", highlight=False)
        history: list[dict] = [{"role": "system", "content": system}] if system else []
        start = len(history)
        while True:
            try:
                line = input("> ")
            except EOFError:
                break
            if line.strip() == "/exit":
                break
            if line.strip() == "/reset":
                del history[start:]
                continue
            if not line.strip():
                continue
            history.append({"role": "user", "content": line})
            reply, _ = generate_reply(loaded.model, loaded.tokenizer, history, max_new_tokens=max_new_tokens,
                                      temperature=temperature, on_text=_write, device=loaded.device)
            _write("\n")
            history.append({"role": "assistant", "content": reply})

    @app.command()
    def serve(
        where: Path = typer.Argument(..., help="a run directory or an export folder"),
        host: str = typer.Option("127.0.0.1", help="listen address (no authentication: keep it local)"),
        port: int = typer.Option(8000, min=0, max=65535, help="0 picks a free port"),
        name: Optional[str] = typer.Option(None, help="model name clients use (default: the folder name)"),
        adapter: Optional[Path] = typer.Option(None, "--adapter", "-a"),
        max_tokens: int = typer.Option(256, "--max-tokens", min=1, help="default max_tokens of a request"),
        device: str = typer.Option("auto"),
    ) -> None:
        """Serve the model on the OpenAI chat-completions route (/v1/chat/completions, /v1/models)."""
        from securefed.inference.load import load_for_inference
        from securefed.inference.serve import make_server

        try:
            loaded = load_for_inference(where, adapter, device)
            server = make_server(loaded, name or where.name, host, port, max_tokens)
        except (UserError, OSError) as e:
            fail(str(e))
        bound_host, bound_port = server.server_address[:2]
        # one line a launcher can parse for the port (port 0 picks one)
        print(f"serving {name or where.name} on http://{bound_host}:{bound_port}/v1", flush=True)
        try:
            server.serve_forever()
        finally:
            server.server_close()


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
