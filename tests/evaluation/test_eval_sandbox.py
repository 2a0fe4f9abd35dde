"""The code sandbox: each program runs in a limited child process and its ending is classified."""

from __future__ import annotations

import time

import pytest

from securefed.errors import UserError
from securefed.evaluation.sandbox import SandboxLimits, check_completion, run_program

PROMPT = 'def add(a, b):\n    """Return a + b."""\n'
TEST = "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(0, 0) == 0\n"
FAST = SandboxLimits(timeout_s=2.0, memory_mb=256)


def test_correct_solution_passes():
    result = check_completion(PROMPT, "    return a + b\n", TEST, "add", FAST)
    assert result.status == "passed" and result.passed
    assert result.returncode == 0


def test_wrong_solution_fails_with_assertion():
    result = check_completion(PROMPT, "    return a - b\n", TEST, "add", FAST)
    assert result.status == "failed"
    assert "AssertionError" in result.stderr


def test_other_exceptions_are_errors():
    assert check_completion(PROMPT, "    return a +\n", TEST, "add", FAST).status == "error"
    assert check_completion(PROMPT, "    return c\n", TEST, "add", FAST).status == "error"


def test_infinite_loop_times_out_and_is_killed():
    result = run_program("while True:\n    pass\n", SandboxLimits(timeout_s=1.0, memory_mb=256))
    assert result.status == "timeout"
    assert result.returncode is None
    assert 0.9 < result.duration_s < 5.0


def test_sleeping_child_process_group_is_killed_on_timeout():
    # A grandchild that outlives the candidate would keep running without the process-group kill.
    source = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    result = run_program(source, SandboxLimits(timeout_s=1.0, memory_mb=512))
    assert result.status == "timeout"
    assert result.duration_s < 5.0
    grandchild = int(result.stdout.split()[0])
    deadline = time.monotonic() + 3.0
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)


def _alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie waiting to be reaped by init."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_memory_bomb_is_stopped():
    source = "chunks = []\nwhile True:\n    chunks.append(bytearray(16 * 1024 * 1024))\n"
    result = run_program(source, SandboxLimits(timeout_s=5.0, memory_mb=256))
    assert result.status == "memory"


def test_network_access_fails():
    source = (
        "import socket\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
        "s.connect(('127.0.0.1', 9))\n"
    )
    result = run_program(source, FAST)
    assert result.status == "error"
    assert "network access is disabled" in result.stderr
    via_helper = run_program("import socket\nsocket.create_connection(('example.com', 80))\n", FAST)
    assert via_helper.status == "error"


def test_exiting_early_does_not_count_as_passed():
    assert run_program("import os\nos._exit(0)\n", FAST).status == "error"
    assert run_program("import sys\nsys.exit(0)\nassert False\n", FAST).status == "error"
    assert run_program("import sys\nsys.exit(3)\n", FAST).returncode == 3


def test_output_is_captured_and_truncated():
    result = run_program(
        "print('x' * 10000)\nimport sys\nprint('oops', file=sys.stderr)\n",
        SandboxLimits(timeout_s=2.0, memory_mb=256, max_output_chars=100),
    )
    assert result.status == "passed"
    assert result.stdout.startswith("x" * 100) and result.stdout.endswith("[truncated]")
    assert result.stderr == "oops\n"


def test_runs_isolated_in_a_fresh_directory_without_proxies(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    source = (
        "import os, sys\n"
        "assert not any('proxy' in k.lower() and k.lower() != 'no_proxy' for k in os.environ)\n"
        "assert set(os.listdir('.')) == {'program.py', '_launcher.py', '_stdout', '_stderr'}\n"
        "assert sys.flags.isolated == 1\n"
    )
    assert run_program(source, FAST).status == "passed"


def test_limits_are_validated():
    with pytest.raises(UserError):
        SandboxLimits(timeout_s=0)
    with pytest.raises(UserError):
        SandboxLimits(memory_mb=8)
    with pytest.raises(UserError):
        check_completion(PROMPT, "", TEST, "add; import os", FAST)
