"""``mirrorkit serve`` as a real process on 127.0.0.1 (a free port it picks itself), for tests and benchmarks.

The server prints its URL once the bundle is verified and the socket listens; start()
waits for that line. Its output (stderr messages, access log on stdout) goes to a file.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from kit import daemon

URL_LINE = re.compile(r"serving bundle \S+ at (https?://127\.0\.0\.1:(\d+))")


class ServeStartError(RuntimeError):
    """The server exited or did not announce itself; the message carries its output."""


class ServeProcess:
    def __init__(self, args: list[str], log_path: Path, startup_timeout: float = 60.0) -> None:
        self.args = args
        self.log_path = log_path
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.host = ""
        self._log: IO[bytes] | None = None

    def start(self) -> ServeProcess:
        argv = [sys.executable, "-m", "mirrorkit.cli.main", "serve", *self.args, "--addr", "127.0.0.1:0"]
        self.proc, self._log = daemon.start(argv, self.log_path, self.log_path.parent)
        deadline = time.monotonic() + self.startup_timeout
        while True:
            match = URL_LINE.search(self.output())
            if match:
                self.url, self.host = match.group(1), f"127.0.0.1:{match.group(2)}"
                return self
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise ServeStartError(f"serve did not start (exit {self.proc.returncode}):\n{self.output()}")
            time.sleep(0.05)

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> tuple[int | None, float]:
        """Send ``sig`` and wait; returns (exit code, seconds it took to exit)."""
        start = time.monotonic()
        code = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                code = self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        elif self.proc is not None:
            code = self.proc.returncode
        daemon.stop(self.proc, self._log)
        self._log = None
        return code, time.monotonic() - start

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
