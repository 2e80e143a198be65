"""A bounded pool of worker threads that a command can leave at once.

``concurrent.futures.ThreadPoolExecutor`` joins its threads when the interpreter
exits, so after Ctrl-C the process still waited for every running upload: through
a slow link the kernel's socket buffers alone hold seconds of data, and the
upload's own interrupt check runs only when the next chunk is wanted. These
workers are daemon threads: after Ctrl-C (or any failure of a task when the
caller stops at the first one) the caller leaves without waiting, and a running
transfer ends with the process, or at its next interrupt check in a longer-lived one.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import TypeVar

from mirrorkit import interrupt

T = TypeVar("T")


def run_all(items: list[T], work: Callable[[T], None], width: int, stop: threading.Event,
            wait_on_failure: bool = True) -> None:
    """Run ``work`` over ``items`` on at most ``width`` daemon threads; raise the first failure.

    ``stop`` set (by a task, or here at the first failure) starts no further item. At a
    failure the running tasks are waited for when ``wait_on_failure`` (they end on their own:
    a registry's answer, the retry budget); at Ctrl-C (KeyboardInterrupt here, or a task's
    :class:`~mirrorkit.interrupt.Interrupted`) never.
    """
    if not items:
        return
    todo: queue.SimpleQueue[T] = queue.SimpleQueue()
    for item in items:
        todo.put(item)
    errors: list[BaseException] = []
    lock = threading.Lock()
    settled = threading.Event()
    left = [min(max(1, width), len(items))]

    def worker() -> None:
        try:
            while not stop.is_set():
                try:
                    item = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    work(item)
                except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                    with lock:
                        errors.append(exc)
                    stop.set()
                    settled.set()
                    return
        finally:
            with lock:
                left[0] -= 1
                if left[0] == 0:
                    settled.set()

    threads = [threading.Thread(target=worker, name="mirrorkit-worker", daemon=True) for _ in range(left[0])]
    try:
        for thread in threads:
            thread.start()
        while not settled.wait(0.2):           # a timed wait: Ctrl-C reaches this thread at once
            pass
    except BaseException:
        stop.set()
        raise
    if errors:
        first = errors[0]
        if isinstance(first, interrupt.Interrupted) or not wait_on_failure:
            raise first
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)
        raise first
