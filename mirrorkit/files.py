"""Writing user-named output files safely.

Outputs are written under a temporary name and renamed into place, so an
interrupted command never leaves a half-written file under the real name. That
rename must never land on a device, a FIFO or a folder: as root, ``-o /dev/null``
would otherwise replace the device with a plain file.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from mirrorkit.errors import InputError


def check_target(path: Path, what: str = "output") -> None:
    """Refuse an output path that is not (or cannot become) a regular file, before any work starts."""
    if not str(path).strip():
        raise InputError(f"empty {what} path")
    try:
        st = path.lstat()
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise InputError(f"{path}: cannot use as {what}: {exc.strerror or exc}") from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise InputError(f"{path}: {what} is {kind}; give a file path")
    parent = path.parent
    for ancestor in [parent, *parent.parents]:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise InputError(f"{path}: cannot write {what}: {ancestor} is not a folder")
            if not os.access(ancestor, os.W_OK | os.X_OK):
                raise InputError(f"{path}: cannot write {what}: {ancestor} is not writable")
            break


def write_atomic(path: Path, text: str, what: str = "output") -> None:
    check_target(path, what)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("w", encoding="utf-8", newline="") as fh:   # line ends exactly as given
            fh.write(text)
        tmp.replace(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise InputError(f"{path}: cannot write {what}: {exc.strerror or exc}") from None
