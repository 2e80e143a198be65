"""Ctrl-C that always stops, promptly, whatever thread is busy.

Python raises KeyboardInterrupt in the main thread only, and loses it when the
signal lands inside a finaliser; meanwhile worker threads would start the next
download or upload. The command line installs a handler that also sets a flag,
and the copy loops check it between units of work (an image, a blob, a chunk),
so an interrupted run stops at the next check with exit code 130.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mirrorkit.errors import MirrorkitError

_REQUESTED = threading.Event()


class Interrupted(MirrorkitError):
    exit_code = 130


def check() -> None:
    """Raise Interrupted if Ctrl-C was pressed; cheap enough for every chunk of a download."""
    if _REQUESTED.is_set():
        raise Interrupted("interrupted")


def sleep(seconds: float) -> None:
    """``time.sleep`` that ends at Ctrl-C: a retry waiting out a registry's outage stops at once."""
    if _REQUESTED.wait(max(seconds, 0.0)):
        raise Interrupted("interrupted")


@contextmanager
def handling_ctrl_c() -> Iterator[None]:
    """For the duration of a command (main thread only): SIGINT sets the flag and interrupts."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigint(signum: int, frame: Any) -> None:
        _REQUESTED.set()
        raise KeyboardInterrupt

    _REQUESTED.clear()
    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _REQUESTED.clear()
