"""Shared by the benchmark smoke tests: the repository root (benchmarks run as modules from it) and
Financial PhraseBank from ../shared/data (skipped where the checkout has none beside it)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fpb() -> Path:
    # ../shared/data beside the checkout, or beside its parent for a git worktree one level deeper
    path = next((p for p in (ROOT.parent / "shared", ROOT.parent.parent / "shared") if p.exists()),
                ROOT.parent / "shared") / "data" / "financial_phrasebank" / "all-data.csv"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return path
