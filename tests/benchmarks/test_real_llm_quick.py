"""benchmarks/real_llm at toy size (embedded tiny model, a few FPB rows): the SFT rows, the per-round
curve and its plot, a tagged rerun, and --merge of the two. Run as a module from the repository root
(see test_gpu_throughput_quick)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(fpb: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmarks.real_llm", "--model", "default", "--data", str(fpb),
                           "--device", "cpu", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_toy_real_llm_rows_curves_tag_and_merge(tmp_path, fpb):
    common = ["--skip-dpo", "--skip-zero-shot", "--parties", "2", "--rounds", "2", "--steps", "1", "--batch", "2",
              "--test-max", "6", "--max-examples", "60", "--max-length", "64", "--set", "evaluation.every=1"]
    res = _run(fpb, *common, "--only", "fedavg plain", "--out", str(tmp_path / "a"))
    assert res.returncode == 0, res.stderr[-2000:]
    row = json.loads((tmp_path / "a" / "results.json").read_text())["sft"][0]
    assert row["run"] == "fedavg plain"
    assert [c["round"] for c in row["curve"]] == [1, 2]  # evaluated every round
    assert row["curve"][-1]["accuracy"] == row["accuracy"]  # the final row is the last point of the curve
    assert (tmp_path / "a" / "curves.png").stat().st_size > 0

    res = _run(fpb, *common, "--only", "centralized", "--tag", "4-bit", "--out", str(tmp_path / "b"))
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads((tmp_path / "b" / "results.json").read_text())["sft"][0]["run"] == "centralized (4-bit)"
    res = subprocess.run([sys.executable, "-m", "benchmarks.real_llm", "--report", "--out", str(tmp_path / "b")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "| centralized (4-bit) |" in (tmp_path / "b" / "report.md").read_text()  # its name, not its slug

    res = subprocess.run([sys.executable, "-m", "benchmarks.real_llm", "--merge", str(tmp_path / "a"),
                          str(tmp_path / "b"), "--out", str(tmp_path / "m")], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    merged = json.loads((tmp_path / "m" / "results.json").read_text())
    assert [r["run"] for r in merged["sft"]] == ["fedavg plain", "centralized (4-bit)"]
    assert (tmp_path / "m" / "utility.png").is_file() and (tmp_path / "m" / "curves.png").is_file()
    assert "| centralized (4-bit) |" in (tmp_path / "m" / "results.md").read_text()


def test_toy_real_llm_stops_resumes_and_writes_the_headline(tmp_path, fpb):
    """A run stopped after round 1 (as a kill would leave it) is refused without --resume, continues
    from its checkpoint with it, and a finished run is read back, not rerun; the headline JSON has
    issue 25's fields for every run."""
    out, headline = tmp_path / "h", tmp_path / "headline.json"
    common = ["--skip-dpo", "--parties", "3", "--rounds", "2", "--steps", "1", "--batch", "2", "--test-max", "6",
              "--max-examples", "60", "--max-length", "64", "--set", "sampling.count=2", "--only", "fedavg plain",
              "--out", str(out), "--headline", str(headline)]
    res = _run(fpb, *common, "--stop-after", "1")
    assert res.returncode == 0, res.stderr[-2000:]
    run_dir = out / "runs" / "fedavg-plain"
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 1
    assert json.loads(headline.read_text())["runs"][0]["kind"] == "zero-shot"  # the stopped run has no entry yet

    res = _run(fpb, *common)
    assert res.returncode != 0 and "add --resume" in res.stderr

    res = _run(fpb, *common, "--resume")
    assert res.returncode == 0, res.stderr[-2000:]
    assert [json.loads(x)["round"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    log_lines = (run_dir / "run.log").read_text()
    runs = {r["run"]: r for r in json.loads(headline.read_text())["runs"]}
    fed = runs["fedavg plain"]
    assert fed["kind"] == "federated" and fed["rounds"] == 2 and fed["sequential_steps"] == 2
    assert fed["server_lr"] == 1.0  # fedavg applies the mean update as is
    assert fed["epsilon"] is None and fed["rows_scored"] == runs["zero-shot"]["rows_scored"] > 0
    assert set(fed) >= {"algorithm", "protocol", "accuracy", "macro_f1", "heldout_loss", "wall_s", "command"}

    res = _run(fpb, *common, "--resume")  # finished: read back, nothing retrained
    assert res.returncode == 0, res.stderr[-2000:]
    assert (run_dir / "run.log").read_text() == log_lines
    assert json.loads(headline.read_text())["runs"][-1]["accuracy"] == fed["accuracy"]

    # --report: one table over every finished run of OUT, trains nothing, keeps the training command
    stopped = out / "runs" / "fedavg-secagg"  # a run stopped part-way is left out of the table
    stopped.mkdir()
    (stopped / "config.json").write_text((run_dir / "config.json").read_text())
    (stopped / "summary.json").write_text("{}")
    (stopped / "metrics.jsonl").write_text((run_dir / "metrics.jsonl").read_text().splitlines()[0] + "\n")
    res = subprocess.run([sys.executable, "-m", "benchmarks.real_llm", "--report", "--out", str(out), "--headline",
                          str(headline)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (run_dir / "run.log").read_text() == log_lines
    table = (out / "report.md").read_text()
    assert "| zero-shot |" in table and "| fedavg plain |" in table and "fedavg secagg" not in table
    assert (out / "report-utility.png").stat().st_size > 0
    again = {r["run"]: r for r in json.loads(headline.read_text())["runs"]}
    assert again["fedavg plain"] == runs["fedavg plain"]  # same figures, same training command


def test_toy_rescore_scores_every_test_row_once(tmp_path, fpb):
    """--rescore scores the final adapter on every TEST row (more than the run's seeded sample), and
    the base model through a zero-B adapter equals the zero-shot score on the same rows; a second
    --rescore reads both back; a retrained adapter is not given the old figures."""
    from benchmarks.real_llm.report import all_test
    from benchmarks.real_llm.rescore import _zero_shot, rescore
    from benchmarks.real_llm.sft import zero_shot
    from securefed.config import load_config
    from securefed.simulation.world import build_world

    lines = fpb.read_text(encoding="latin-1").splitlines()
    small = tmp_path / "fpb-80.csv"  # 80 rows from all over the file (it is sorted): TEST is 16 of them
    small.write_text("\n".join([lines[0]] + lines[1::60][:80]) + "\n", encoding="latin-1")
    out, headline = tmp_path / "r", tmp_path / "headline.json"
    common = ["--skip-dpo", "--parties", "2", "--rounds", "1", "--steps", "1", "--batch", "2", "--test-max", "5",
              "--max-length", "64", "--only", "fedavg plain", "--out", str(out)]
    res = _run(small, *common)
    assert res.returncode == 0, res.stderr[-2000:]
    res = subprocess.run([sys.executable, "-m", "benchmarks.real_llm", "--rescore", "--out", str(out),
                          "--headline", str(headline)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    run_dir = out / "runs" / "fedavg-plain"
    rescored = all_test(run_dir)
    assert rescored["split"] == "test" and rescored["rows_scored"] == 16  # 20% of the 80 rows, not the 5 sampled
    entries = {e["run"]: e for e in json.loads(headline.read_text())["runs"]}
    assert entries["fedavg plain"]["rows_scored"] == 5 and entries["fedavg plain"]["all_test"] == rescored
    assert entries["zero-shot"]["all_test"]["rows_scored"] == 16
    assert "| fedavg plain | " in (out / "rescore.md").read_text() and (out / "rescore.png").stat().st_size > 0

    # The zero-B adapter is the base model: the same figures as scoring the base on all 16 rows.
    world = build_world(load_config(run_dir / "config.json", ["evaluation.max_examples=1000000"]))
    base = zero_shot(world)
    assert (base["accuracy"], base["eval_loss"]) == pytest.approx(
        (entries["zero-shot"]["all_test"]["accuracy"], entries["zero-shot"]["all_test"]["heldout_loss"]), abs=1e-6)
    assert _zero_shot(run_dir)["heldout_loss"] == pytest.approx(base["eval_loss"], abs=1e-6)

    logged: list[dict] = []
    again = rescore(out, [], logged.append)
    assert [r["accuracy"] for r in again] == [entries["zero-shot"]["all_test"]["accuracy"], rescored["accuracy"]]
    assert not [line for line in logged if "rescoring" in line]  # read back, nothing scored again
    with pytest.raises(SystemExit, match="no finished non-Local run named"):
        rescore(out, ["fedavg secagg"], logged.append)
    weights = run_dir / "adapter" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes() + b" ")  # another adapter now: its old figures no longer apply
    assert all_test(run_dir) is None
