"""`securefed init` writes commented configs that load as they are (the README's starting points)."""

from __future__ import annotations

from typer.testing import CliRunner

from securefed.cli.app import app
from securefed.config import load_config


def test_templates_load_and_are_never_overwritten(tmp_path):
    for name in ("llm", "deploy"):
        path = tmp_path / f"{name}.toml"
        res = CliRunner().invoke(app, ["init", name, "--out", str(path)])
        assert res.exit_code == 0, res.output
        text = path.read_text()
        assert text.startswith("# ") and "@" not in text.split("name_or_path")[1].splitlines()[0]
        cfg = load_config(path)
        assert cfg.aggregation.protocol == "secagg"
        if name == "llm":
            assert cfg.model.name_or_path.endswith(".gguf") and cfg.model.quantization == "4bit"
            assert cfg.data.preset == "financial-phrasebank" and cfg.data.test_fraction > 0
        res = CliRunner().invoke(app, ["init", name, "--out", str(path)])
        assert res.exit_code == 2 and "exists" in res.output and path.read_text() == text
    res = CliRunner().invoke(app, ["init", "nope", "--out", str(tmp_path / "x.toml")])
    assert res.exit_code == 2 and "llm" in res.output and not (tmp_path / "x.toml").exists()
