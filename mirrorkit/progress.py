"""Progress bars on stderr for anything that moves bytes; silent when stderr is not a terminal."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

Callback = Callable[[str, int], None]


@contextlib.contextmanager
def bars(images: int, total_bytes: int | None, label: str) -> Iterator[Callback]:
    if not sys.stderr.isatty():
        yield lambda what, n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TransferSpeedColumn

    console = Console(file=sys.stderr)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                        console=console, transient=True)
    tasks: dict[str, TaskID] = {}
    with progress:
        tasks["image"] = progress.add_task("images", total=images)
        tasks["bytes"] = progress.add_task(label, total=total_bytes)
        tasks["write"] = progress.add_task("writing bundle", total=None, visible=False)

        def update(what: str, n: int) -> None:
            task = tasks.get(what)
            if task is not None:
                progress.update(task, advance=n, visible=True)

        yield update


def human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
              "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "t": 1000**4, "tb": 1000**4, "tib": 1024**4}


def parse_size(text: str) -> int:
    """``4GiB``, ``700MB``, ``1g``, ``123456``."""
    from mirrorkit.errors import InputError

    raw = text.strip().lower().replace(" ", "")
    num = raw.rstrip("kmgtib")
    unit = raw[len(num):]
    try:
        value = float(num)
    except ValueError:
        raise InputError(f"invalid size {text!r}: expected e.g. 4GiB, 700MB") from None
    if unit not in SIZE_UNITS or value <= 0:
        raise InputError(f"invalid size {text!r}: expected e.g. 4GiB, 700MB")
    return int(value * SIZE_UNITS[unit])
