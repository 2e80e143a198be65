"""Writing user-named output files safely.

Outputs are written under a temporary name and renamed into place, so an
interrupted command never leaves a half-written file under the real name. That
rename must never land on a device, a FIFO or a folder: as root, ``-o /dev/null``
would otherwise replace the device with a plain file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

from mirrorkit.errors import DiskFullError, InputError, OperationError
from mirrorkit.progress import human


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


def write_atomic(path: Path, text: str, what: str = "output", mode: int | None = None) -> None:
    """``mode`` (e.g. 0o600 for a file holding secrets) is set before any byte is written."""
    check_target(path, what)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if mode is None:
            with tmp.open("w", encoding="utf-8", newline="") as fh:   # line ends exactly as given
                fh.write(text)
        else:
            tmp.unlink(missing_ok=True)  # a stale temp file keeps its old mode: start afresh
            with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "w",
                           encoding="utf-8", newline="") as fh:
                fh.write(text)
        tmp.replace(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise InputError(f"{path}: cannot write {what}: {exc.strerror or exc}") from None


# --------------------------------------------------------------------------- a full disk


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC or EDQUOT: final, never worth a retry, and reported by ``disk_full`` in one line."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def write_error(exc: OSError, where: str) -> OperationError:
    """A local write that failed, as one final line naming the folder (never retried).

    A full disk is a DiskFullError without a work folder: a command that owns one
    (pull-bundle, through ``full_disk_reported``) restates it with that folder and its size.
    """
    if is_disk_full(exc):
        return DiskFullError(f"no space left on device writing to {where}; free space and run again: "
                             "what was fetched is kept and the next run resumes from it")
    return OperationError(f"cannot write to {where}: {exc.strerror or exc}")


def tree_size(path: Path) -> int:
    """Bytes held by the regular files under ``path`` (0 if it is gone), never following links."""
    total = 0
    for folder, _, names in os.walk(path):
        for name in names:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(folder, name))
                if stat.S_ISREG(st.st_mode):
                    total += st.st_size
    return total


def disk_full(work: Path, doing: str, removed: Path | None = None) -> DiskFullError:
    """The one line a full disk gives, wherever it struck (a download, a blob adoption, a bundle write).

    Written once so every byte-moving path says the same thing: what was being
    done, what was removed so the disk is not left full, and the work folder with
    its size, which a rerun reuses instead of fetching again.
    """
    gone = f"; removed the partial {removed}" if removed is not None else ""
    error = DiskFullError(f"no space left on device while {doing}{gone}; the work folder {work} "
                         f"({human(tree_size(work))} so far) is kept: free some space and run the same command "
                         "again, it resumes from there")
    error.work = work
    return error


@contextlib.contextmanager
def full_disk_reported(work: Path, doing: str, scratch: Sequence[Path] = ()) -> Iterator[None]:
    """Turn a full disk anywhere in the block into ``disk_full``'s one line, after freeing ``scratch``.

    ``scratch`` holds what a rerun would not reuse (half-written downloads, a
    child's temporary folders): removed so the disk is not left 100 % full.
    Completed blobs in ``work`` stay. A DiskFullError that already names its
    work folder passes through unchanged.
    """
    try:
        yield
    except DiskFullError as exc:
        if exc.work is not None:
            raise
        _remove(scratch)
        raise disk_full(work, doing) from None
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        _remove(scratch)
        raise disk_full(work, doing) from None


def _remove(paths: Sequence[Path]) -> None:
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
