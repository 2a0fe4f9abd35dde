"""What a person sees of a run: a line per round (and per party) when stdout is not a terminal, the
same lines in OUT/run.log, skipped rows said on the console, TensorBoard events as the run goes,
and `securefed report` pictures, table and page for two runs."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest
from rich.console import Console

from securefed.config import load_config
from securefed.errors import ConfigError, UserError
from securefed.progress import RunProgress
from securefed.reporting.report import write_report
from securefed.simulation.report import print_summary
from securefed.simulation.runner import simulate

SECUREFED = [sys.executable, "-m", "securefed.cli.app"]
ROUND_LINE = re.compile(r"round (\d)/2: loss \d+\.\d{4} accuracy \d\.\d{4} macro_f1 \d\.\d{4} "
                        r"bytes/party \d+\.\d kB round \d+\.\d s elapsed \d:\d\d:\d\d$")
PNG = b"\x89PNG\r\n\x1a\n"


def cli(*args, cwd):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([*SECUREFED, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """fedavg with TensorBoard on a data file holding a malformed row, then scaffold, both with
    stdout and the console going to files (no terminal)."""
    tmp = tmp_path_factory.mktemp("runs")
    data = tmp / "d.jsonl"
    good = [{"instruction": f"Say {w}.", "output": w} for w in ("hi", "yes", "no", "ok", "go", "up") * 8]
    lines = [json.dumps(r) for r in good]
    lines.insert(5, json.dumps({"instruction": "Say nothing."}))  # row 6: no output
    data.write_text("\n".join(lines) + "\n")
    small = ["parties=3", "rounds=2", "training.max_steps=2", "training.batch_size=4", "training.max_length=32",
             "evaluation.max_examples=8", "evaluation.batch_size=8"]
    stdout, stderr = io.StringIO(), io.StringIO()  # not terminals, like a pipe, a file or CI
    with contextlib.redirect_stdout(stdout):
        summary = simulate(load_config(None, small + [f"data.source={data}", "data.preset=alpaca",
                                                      "data.skip_malformed=true", "output.tensorboard=true"]),
                           tmp / "fedavg", console=Console(file=stderr))
    with contextlib.redirect_stdout(io.StringIO()):
        simulate(load_config(None, small + ["algorithm.name=scaffold"]), tmp / "scaffold",
                 console=Console(file=io.StringIO()))
    return tmp, SimpleNamespace(stdout=stdout.getvalue(), stderr=stderr.getvalue(), summary=summary)


def test_non_tty_run_prints_a_line_per_round_and_per_party(two_runs):
    tmp, res = two_runs
    lines = res.stdout.splitlines()
    # the instruction task has no accuracy: the line shows the eval loss instead; with a labelled task
    # accuracy and macro_f1 (checked on the scaffold run's log below)
    rounds = [line for line in lines if line.startswith("round ") and "/2:" in line]
    assert [line.split("/")[0] for line in rounds] == ["round 1", "round 2"]
    assert all(re.search(r"loss \d+\.\d{4} eval_loss \d+\.\d{4} bytes/party [\d.]+ kB round [\d.]+ s "
                         r"elapsed \d:\d\d:\d\d$", line) for line in rounds), rounds
    for r in (1, 2):
        for p in ("party-00", "party-01", "party-02"):
            assert any(line.startswith(f"round {r}: {p} training (elapsed ") for line in lines)
    # the skipped row is said where people look, not only in summary.json
    assert "skipped 1 malformed row(s) of 49 (data.skip_malformed): rows 6" in res.stdout + res.stderr
    log = (tmp / "fedavg" / "run.log").read_text()
    assert "skipped 1 malformed row(s)" in log and all(line in log for line in rounds)
    table = io.StringIO()
    print_summary(res.summary, tmp / "fedavg", Console(file=table, width=100))
    assert "skipped 1 malformed data rows" in table.getvalue()


def test_run_log_is_always_written(two_runs):
    tmp, _ = two_runs
    log = (tmp / "scaffold" / "run.log").read_text().splitlines()
    rounds = [line.split(" ", 1)[1] for line in log if " round " in line and "/2:" in line]
    assert len(rounds) == 2 and all(ROUND_LINE.search(line) for line in rounds), rounds
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ round 1: party-00 training", log[0])


def test_tensorboard_events_are_written_each_round(two_runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tmp, _ = two_runs
    events = EventAccumulator(str(tmp / "fedavg" / "tensorboard"))
    events.Reload()
    metrics = [json.loads(x) for x in (tmp / "fedavg" / "metrics.jsonl").read_text().splitlines()]
    loss = events.Scalars("train_loss")
    assert [e.step for e in loss] == [1, 2]
    assert [e.value for e in loss] == pytest.approx([m["train_loss"] for m in metrics], rel=1e-6)
    assert "bytes_sent_per_party" in events.Tags()["scalars"]


def test_tensorboard_without_the_package_is_a_clear_config_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(ConfigError, match=r"output.tensorboard.*pip install 'securefed\[tensorboard\]'"):
        load_config(None, ["output.tensorboard=true"])


def test_report_on_two_runs(two_runs):
    tmp, _ = two_runs
    res = cli("report", str(tmp / "fedavg"), str(tmp / "scaffold"), "--out", str(tmp / "report"), cwd=tmp)
    assert res.returncode == 0, res.stderr
    out = tmp / "report"
    for name in ("loss", "accuracy", "bytes"):
        assert (out / f"{name}.png").read_bytes().startswith(PNG)
    assert not (out / "epsilon.png").exists()  # no DP in these runs: said in the markdown instead
    md = (out / "report.md").read_text()
    assert re.search(r"^\| fedavg \| fedavg \| plain \| 2 \| \d\.\d{4} \| \d\.\d{4} \| - \| - \|", md, re.M)
    assert re.search(r"^\| scaffold \| scaffold \| plain \| 2 \| \d\.\d{4} \| \d\.\d{4} \| \d\.\d{4} \| \d\.\d{4} \|",
                     md, re.M)
    assert "![Loss per round](loss.png)" in md
    assert "- Privacy spent (max epsilon over parties): not recorded by these runs" in md
    page = (out / "report.html").read_text()
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == 3 and all(base64.b64decode(i).startswith(PNG) for i in images)
    assert "src='http" not in page and "loss.png" not in page  # self-contained


def test_report_names_a_directory_that_is_not_a_run(tmp_path):
    with pytest.raises(UserError, match="no metrics.jsonl"):
        write_report([tmp_path], tmp_path / "out")


def test_terminal_keeps_the_rich_bar():
    screen, lines = io.StringIO(), io.StringIO()
    console = Console(file=screen, force_terminal=True, width=100)
    with RunProgress(console, None, rounds=2, stream=lines) as progress:
        task = progress.add_task("parties", total=3)
        progress.update(task, description="round 1: party-00 training")
        progress.advance(task)
        progress.round_done({"round": 1, "train_loss": 1.0, "accuracy": 0.5, "seconds": 1.0})
    assert lines.getvalue() == ""  # no plain lines on a terminal
    assert "round 1/2: loss 1.0000 accuracy 0.5000" in screen.getvalue() and "━" in screen.getvalue()


def test_python_warnings_during_a_run_reach_the_log_and_the_lines(tmp_path):
    import warnings

    lines, log = io.StringIO(), tmp_path / "run.log"
    console = Console(file=io.StringIO(), force_terminal=False)
    before = warnings.showwarning
    with RunProgress(console, log, rounds=1, stream=lines, tty=False):
        warnings.warn("modulus too small for this clip", UserWarning)
        warnings.warn("old_name is deprecated", FutureWarning)  # a library's notice: stays on stderr
    assert "warning: UserWarning: modulus too small for this clip" in lines.getvalue()
    assert "deprecated" not in lines.getvalue() and "deprecated" not in log.read_text()
    assert "warning: UserWarning: modulus too small for this clip" in log.read_text()
    assert warnings.showwarning is before  # the hook is the caller's again after the run
