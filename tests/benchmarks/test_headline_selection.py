"""The committed headline runs (bench-state/real_llm_headline) and the preset that resumes them draw the
same parties: the parties each round's run.log says trained are the ones `--preset headline` selects
today. A change to the preset's selection (e.g. its rule) would make a resumed or new run of the table
train other parties in other rounds than the finished ones did; this fails first."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from benchmarks.real_llm.sft import PRESETS, sft_base, sft_runs
from securefed.config import load_config
from securefed.simulation.steps import party_names, select_parties

RUNS = Path(__file__).parents[2] / "bench-state" / "real_llm_headline" / "runs"
TRAINED = re.compile(r"round (\d+): (party-\d+) training")


def trained_by_round(log: Path) -> dict[int, set[str]]:
    """round (1-based) -> the parties the log says trained; a resumed round's last pass wins."""
    seen: dict[int, list[tuple[int, str]]] = {}
    for n, line in enumerate(log.read_text().splitlines()):
        m = TRAINED.search(line)
        if m:
            seen.setdefault(int(m.group(1)), []).append((n, m.group(2)))
    out = {}
    for r, hits in seen.items():
        hits.sort()
        last = [pid for _, pid in hits[-3:]]  # 3 a round: the last three lines are the last pass
        out[r] = set(last)
    return out


@pytest.mark.parametrize("run", ["fedavg plain", "fedprox plain", "local"])
def test_the_preset_selects_what_the_committed_runs_trained(run) -> None:
    log = RUNS / run.replace(" ", "-") / "run.log"
    if not log.is_file():
        pytest.skip(f"{log} not committed")
    p = PRESETS["headline"]
    ns = argparse.Namespace(model="default", device="cpu", seed=0, data="unused.csv", alpha=0.5, parties=10, set=[])
    extra = dict(sft_runs(argparse.Namespace(parties=10, only=run), p))[run]
    cfg = load_config(None, sft_base(ns, p) + extra)
    ids = party_names(cfg.parties)
    trained = trained_by_round(log)
    assert len(trained) == cfg.rounds == 30
    for r, parties in trained.items():
        assert parties == set(select_parties(ids, r - 1, cfg.seed, cfg.sampling.count, cfg.sampling.fraction,
                                             cfg.sampling.rule)), f"round {r}"
    # and the rule matters: today's default would have drawn other parties in most rounds
    other = sum(trained[r + 1] != set(select_parties(ids, r, cfg.seed, 3, None, "sha256-rank")) for r in range(30))
    assert other >= 20


# tag -> (its --set overrides, its preset flags)
TAGS = {"": ([], {}), "5 rounds": ([], {"rounds": 5}), "5 rounds 8 sampled": (["sampling.count=8"], {"rounds": 5}),
        "server lr 1e-3": ([], {"adaptive_server_lr": 1e-3, "adaptive_server_schedule": "constant"}),
        "server lr 1e-2 constant": ([], {"adaptive_server_schedule": "constant"})}


def _preset_configs():
    """(run directory, today's preset config for it) for every run name and tag of the table."""
    p = PRESETS["headline"]
    for tag, (sets, flags) in TAGS.items():
        q = dict(p, **flags)
        ns = argparse.Namespace(model="default", device="cpu", seed=0, data="unused.csv", alpha=0.5, parties=10,
                                set=sets, only="", tag=tag)
        for name, extra in sft_runs(ns, q):
            name = f"{name} ({tag})" if tag else name
            yield RUNS / name.replace(" ", "-").replace("(", "").replace(")", ""), sft_base(ns, q) + extra


def test_every_committed_run_continues_under_todays_preset() -> None:
    """`--resume` refuses a config that differs from a run's (checkpoint.check_same_run); every committed
    run's config must still be what the preset builds, or the table's remaining runs could not go on."""
    import json

    from securefed.simulation.checkpoint import check_same_run

    checked = set()
    for run_dir, overrides in _preset_configs():
        if (run_dir / "config.json").is_file():
            check_same_run(json.loads((run_dir / "config.json").read_text()), load_config(None, overrides), run_dir)
            checked.add(run_dir)
    committed = {d for d in RUNS.iterdir() if (d / "config.json").is_file()}
    assert checked == committed and len(checked) >= 12  # every run directory is one the preset builds
