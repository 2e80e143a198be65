"""Progress bars on stderr for anything that moves bytes; silent when stderr is not a terminal."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any, TextIO

Callback = Callable[[str, int], None]


@contextlib.contextmanager
def bars(images: int, total_bytes: int | None, label: str, stream: TextIO | None = None) -> Iterator[Callback]:
    """Bars for images (a count) and bytes (sizes and a rate); ``stream`` defaults to stderr.

    ``update("total", n)`` sets the byte bar's total once it is known (the unique bytes left
    to move, each shared blob once), instead of a sum over images that counts shared layers again.
    """
    out = stream if stream is not None else sys.stderr
    if not out.isatty():
        yield lambda what, n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskID, TextColumn

    console = Console(file=out)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), *_amount_columns(),
                        console=console, transient=stream is None)
    tasks: dict[str, TaskID] = {}
    with progress:
        tasks["image"] = progress.add_task("images", total=images, unit="count")
        tasks["bytes"] = progress.add_task(label, total=total_bytes)
        tasks["write"] = progress.add_task("writing bundle", total=None, visible=False)

        def update(what: str, n: int) -> None:
            if what == "total":
                progress.update(tasks["bytes"], total=n)
                return
            task = tasks.get(what)
            if task is not None:
                progress.update(task, advance=n, visible=True)

        yield update


def _amount_columns() -> tuple[Any, Any]:
    """The amount and rate columns: ``3/17`` and nothing for the image count, sizes and a byte rate for
    bytes (rich's own columns would print the count as "3/17 bytes" at "0.8 bytes/s").
    Made here so that rich is imported only when a bar is drawn."""
    from rich.progress import DownloadColumn, ProgressColumn, Task, TransferSpeedColumn
    from rich.text import Text

    class Amount(ProgressColumn):
        def render(self, task: Task) -> Text:
            if task.fields.get("unit") == "count":
                total = "?" if task.total is None else f"{task.total:.0f}"
                return Text(f"{task.completed:.0f}/{total}", style="progress.download")
            return DownloadColumn().render(task)

    class Rate(ProgressColumn):
        def render(self, task: Task) -> Text:
            return Text("") if task.fields.get("unit") == "count" else TransferSpeedColumn().render(task)

    return Amount(), Rate()


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
