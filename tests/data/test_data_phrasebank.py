"""The real Financial PhraseBank file from the shared data folder (skipped when absent)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from securefed.data import DataConfig, load_examples, partition, partition_report

REPO = Path(__file__).resolve().parents[2]
FPB = REPO.parent / "shared" / "data" / "financial_phrasebank" / "all-data.csv"

pytestmark = pytest.mark.skipif(not FPB.is_file(), reason=f"{FPB} not present")


def test_loads_all_rows_with_three_labels():
    cfg = DataConfig(source=str(FPB), preset="financial-phrasebank", eval_fraction=0.0)
    data = load_examples(cfg, seed=0)
    assert len(data.train) == 4845 and data.skipped == 0 and data.inferred_preset is None  # it was given
    assert data.labels == ("negative", "neutral", "positive")
    counts = Counter(ex.label for ex in data.train)
    assert counts == {"neutral": 2878, "positive": 1363, "negative": 604}
    first = data.train[0]
    assert first.prompt.startswith(
        "What is the sentiment of this news? Answer positive, neutral or negative.\nNews: Technopolis"
    )
    assert first.prompt.endswith("\nAnswer:") and first.response == " neutral"


def test_inferred_preset_split_and_dirichlet():
    data = load_examples(DataConfig(source=str(FPB)), seed=1)  # preset inferred from the header
    assert (len(data.train), len(data.eval)) == (4645, 200)
    assert data.inferred_preset == "financial-phrasebank"  # the runner says so on the console and in run.log
    cfg = DataConfig(partition={"method": "dirichlet", "alpha": 0.1}).partition
    parts = partition(len(data.train), data.partition_keys, 5, cfg, seed=1)
    report = partition_report(parts, data.partition_keys)
    assert report.total == 4645 and all(p.size > 0 for p in report.parties)
