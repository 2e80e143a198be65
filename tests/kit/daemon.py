"""Starting and stopping the real daemons the kit runs (docker-registry, containerd).

A test that dies must not leave servers behind: each daemon asks the kernel to
end it when its parent goes, and stop() always reaps it (terminate, then kill).
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import subprocess
import threading
from pathlib import Path
from typing import IO

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Runs in the child before exec: if pytest is SIGKILLed atexit never runs, so the kernel does it."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def start(argv: list[str], log_path: Path, cwd: Path) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    log = open(log_path, "ab")  # noqa: SIM115 - closed by stop()
    on_main = threading.current_thread() is threading.main_thread()
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
        # pdeathsig fires when the *thread* that forked exits, so only from main.
        preexec_fn=die_with_parent if on_main else None,
    )
    return proc, log


def stop(proc: subprocess.Popen[bytes] | None, log: IO[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    if log is not None:
        log.close()


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except (OSError, RuntimeError):
        return ""
    return "\n".join(text.splitlines()[-lines:])
