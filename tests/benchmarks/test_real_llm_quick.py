"""benchmarks/real_llm at toy size (embedded tiny model, a few FPB rows): the SFT rows, the per-round
curve and its plot, a tagged rerun, and --merge of the two. Run as a module from the repository root
(see test_gpu_throughput_quick)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
