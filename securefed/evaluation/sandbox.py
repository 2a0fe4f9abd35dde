"""Run untrusted generated code in a child process with resource limits.

Each run gets a fresh temporary directory and a fresh `python -I` interpreter (isolated mode: no
user site-packages, no PYTHON* variables, script dir not on sys.path). The child is limited by
`setrlimit` (address space, CPU seconds, file size, no core dumps), a wall-clock timeout that kills
its whole process group, and a minimal environment without proxy variables. A small launcher
disables the `socket` module's connecting calls before the candidate runs.

This is BEST-EFFORT hygiene against accidents (infinite loops, memory bombs, stray network calls,
files written into the working directory), NOT a security boundary: the candidate runs as the same
user, can read files, and can bypass the socket patch (e.g. via `_socket` or `ctypes`). Run
untrusted code from unknown sources inside a container or VM as well. POSIX only.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

from securefed.errors import UserError

try:
    import resource
except ImportError:  # Windows: run_program refuses to run there
    resource = None  # type: ignore[assignment]

Status = Literal["passed", "failed", "timeout", "memory", "error"]

# Exit codes the launcher uses to report how the candidate ended (anything else: killed / crashed).
_EXIT_ASSERTION = 71
_EXIT_MEMORY = 72
_EXIT_EXCEPTION = 73
_EXIT_EARLY = 74

# The launcher is a fixed script: it reads a one-time token from stdin (so the candidate cannot
# learn it afterwards), blocks networking, runs the candidate as __main__, and writes the token to
# a file only if the candidate ran to the end. A candidate calling os._exit(0) therefore does not
# count as passed.
_LAUNCHER = r"""
import os, runpy, socket, sys, traceback

_token = sys.stdin.readline().strip()
sys.stdin.close()

def _blocked(*args, **kwargs):
    raise OSError("network access is disabled in the securefed sandbox")

for _name in ("connect", "connect_ex", "bind", "sendto", "sendmsg"):
    setattr(socket.socket, _name, _blocked)
socket.create_connection = _blocked
socket.create_server = _blocked
socket.getaddrinfo = _blocked
socket.gethostbyname = _blocked

_code = 0
try:
    runpy.run_path(sys.argv[1], run_name="__main__")
except SystemExit as exc:
    if exc.code not in (None, 0):
        traceback.print_exc()
        _code = exc.code if isinstance(exc.code, int) else 1
    else:
        print("program called exit() before finishing", file=sys.stderr)
        _code = %(early)d
except MemoryError:
    # Little memory may be left: report with the exit code alone.
    os._exit(%(memory)d)
except AssertionError:
    traceback.print_exc()
    _code = %(assertion)d
except BaseException:
    traceback.print_exc()
    _code = %(exception)d
if _code == 0:
    with open(sys.argv[2], "w") as f:
        f.write(_token)
sys.stdout.flush()
sys.stderr.flush()
os._exit(_code)
""" % {
    "early": _EXIT_EARLY,
    "memory": _EXIT_MEMORY,
    "assertion": _EXIT_ASSERTION,
    "exception": _EXIT_EXCEPTION,
}


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits for one run. `cpu_s=None` means wall time rounded up plus one second."""

    timeout_s: float = 10.0
    memory_mb: int = 1024
    cpu_s: int | None = None
    max_output_chars: int = 4000
    max_file_mb: int = 16

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise UserError(f"sandbox timeout must be > 0 seconds, got {self.timeout_s}")
        if self.memory_mb < 64:
            # The interpreter itself needs some tens of MB of address space just to start.
            raise UserError(f"sandbox memory limit must be >= 64 MB, got {self.memory_mb}")
        if self.cpu_s is not None and self.cpu_s < 1:
            raise UserError(f"sandbox CPU limit must be >= 1 second, got {self.cpu_s}")


@dataclass(frozen=True)
class SandboxResult:
    status: Status
    returncode: int | None  # negative: killed by that signal; None: killed on timeout
    stdout: str  # truncated to max_output_chars
    stderr: str
    duration_s: float

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def run_program(source: str, limits: SandboxLimits = SandboxLimits()) -> SandboxResult:
    """Run `source` as a Python program in the sandbox and classify how it ended.

    passed: ran to the end (exit 0). failed: an AssertionError escaped (a test failed).
    timeout: wall time or CPU time ran out. memory: MemoryError or killed at the address-space
    limit. error: any other exception, a non-zero exit, an early exit(), or a crash.
    """
    if os.name != "posix" or resource is None:
        raise UserError("the code sandbox needs a POSIX system (setrlimit, process groups)")
    with tempfile.TemporaryDirectory(prefix="securefed-sandbox-") as tmp:
        workdir = Path(tmp)
        program = workdir / "program.py"
        program.write_text(source, encoding="utf-8")
        launcher = workdir / "_launcher.py"
        launcher.write_text(_LAUNCHER, encoding="utf-8")
        done_file = workdir / "_done"
        token = secrets.token_hex(16)
        stdout_path, stderr_path = workdir / "_stdout", workdir / "_stderr"
        start = time.monotonic()
        with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
            # Output goes to files, not pipes: the parent never buffers unbounded output and the
            # child never blocks on a full pipe. RLIMIT_FSIZE bounds the files.
            process = subprocess.Popen(
                [sys.executable, "-I", str(launcher), str(program), str(done_file)],
                cwd=workdir,
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=err,
                env=_clean_env(workdir),
                start_new_session=True,  # own process group, so a timeout kills grandchildren too
                preexec_fn=_limiter(limits),
                close_fds=True,
            )
            timed_out = False
            try:
                process.communicate(input=(token + "\n").encode(), timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _kill_group(process.pid)  # also reaps anything the candidate left running
                process.wait()
        duration = time.monotonic() - start
        stdout = _read_truncated(stdout_path, limits.max_output_chars)
        stderr = _read_truncated(stderr_path, limits.max_output_chars)
        completed = done_file.exists() and done_file.read_text(encoding="utf-8") == token
        status = _classify(process.returncode, timed_out, completed, stderr)
        return SandboxResult(
            status=status,
            returncode=None if timed_out else process.returncode,
            stdout=stdout,
            stderr=stderr,
            duration_s=duration,
        )


def check_completion(
    prompt: str,
    completion: str,
    test: str,
    entry_point: str,
    limits: SandboxLimits = SandboxLimits(),
) -> SandboxResult:
    """HumanEval-style functional check: prompt + completion, then the tests, then check(entry)."""
    if not entry_point.isidentifier():
        raise UserError(f"entry_point must be a Python identifier, got {entry_point!r}")
    source = f"{prompt}{completion}\n\n{test}\n\ncheck({entry_point})\n"
    return run_program(source, limits)


def _classify(returncode: int, timed_out: bool, completed: bool, stderr: str) -> Status:
    if timed_out or (returncode in (-signal.SIGXCPU, -signal.SIGKILL) and not completed):
        # SIGKILL without our timeout comes from the kernel after the CPU hard limit (or, rarely,
        # the OOM killer; RLIMIT_AS normally turns memory exhaustion into a MemoryError first).
        return "timeout"
    if returncode == _EXIT_MEMORY or "MemoryError" in stderr:
        return "memory"
    if returncode == 0 and completed:
        return "passed"
    if returncode == _EXIT_ASSERTION:
        return "failed"
    return "error"


def _limiter(limits: SandboxLimits) -> Callable[[], None]:
    # A child may not raise a hard limit above the parent's, so clamp to what we already have.
    def clamp(kind: int, wanted: int) -> int:
        hard = resource.getrlimit(kind)[1]
        return wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)

    memory = clamp(resource.RLIMIT_AS, limits.memory_mb * 1024 * 1024)
    cpu_wanted = limits.cpu_s if limits.cpu_s is not None else int(limits.timeout_s) + 1
    cpu = clamp(resource.RLIMIT_CPU, cpu_wanted + 1) - 1
    file_size = clamp(resource.RLIMIT_FSIZE, limits.max_file_mb * 1024 * 1024)

    def apply() -> None:
        # Runs in the child between fork and exec. The parent may have other threads (torch, the
        # code task's worker pool), so this must not take locks: no imports, no allocation-heavy
        # work; `resource` is imported at module level for that reason.
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        # Soft limit sends SIGXCPU; the hard limit one second later is SIGKILL.
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def _clean_env(workdir: Path) -> dict[str, str]:
    # Start from nothing: no proxy settings, no credentials or tokens from the evaluator's env.
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(workdir),
        "TMPDIR": str(workdir),
        "LANG": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "no_proxy": "*",
        "NO_PROXY": "*",
    }


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _read_truncated(path: Path, limit: int) -> str:
    with open(path, "rb") as f:
        data = f.read(limit * 4 + 4)  # UTF-8 is at most 4 bytes a character
    text = data.decode("utf-8", errors="replace")
    if len(text) > limit or path.stat().st_size > len(data):
        return text[:limit] + "\n...[truncated]"
    return text
