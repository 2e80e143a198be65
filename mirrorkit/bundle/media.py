"""What writing a bundle asks of the disks it goes to: room, one writer at a time, the form asked for.

A bundle is written to real media (a USB disk, a share, a DVD image), often
next to a work folder holding the same bytes. Three things are checked before a
byte moves, so that a run never fails or corrupts anything late:

- free space: what the run will still write, per filesystem, against what that
  filesystem has (one line naming the folder, the bytes needed and available);
- one writer per output: two pull-bundle runs with the same ``-o`` would share a
  work folder and overwrite each other's volumes, so the second one stops;
- the form: volumes on disk written with another ``--split`` (or compression)
  are not "up to date", whatever the lock says.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from mirrorkit.bundle.guard import detect, open_tar, reading
from mirrorkit.bundle.volumes import META_CAPS, volume_paths, written_split
from mirrorkit.errors import InputError, OperationError
from mirrorkit.progress import human


def existing_folder(path: Path) -> Path:
    """The nearest folder of ``path`` that exists (where its bytes would land)."""
    for candidate in [path, *path.parents]:
        if candidate.is_dir():
            return candidate
    return Path(".")


def free_bytes(path: Path) -> int:
    st = os.statvfs(existing_folder(path))
    return st.f_bavail * st.f_frsize


def check_space(needs: Sequence[tuple[Path, int]]) -> None:
    """Refuse to start when a filesystem lacks the bytes the run will write there.

    ``needs`` pairs a folder with the bytes the run writes under it; folders on one
    filesystem add up. The first filesystem short of space is named in one line.
    """
    per_device: dict[int, tuple[list[Path], int]] = {}
    for folder, amount in needs:
        device = os.stat(existing_folder(folder)).st_dev
        folders, total = per_device.get(device, ([], 0))
        per_device[device] = ([*folders, folder], total + amount)
    for folders, total in per_device.values():
        available = free_bytes(folders[0])
        if total > available:
            where = " and ".join(str(f) for f in folders)
            raise InputError(f"not enough free space for {where}: {total} bytes ({human(total)}) needed, "
                             f"{available} bytes ({human(available)}) available; free some space, or put the work "
                             "folder elsewhere with --work-dir")


def lock_path(output: Path) -> Path:
    """The lock file beside a bundle: hidden, named after the bundle, kept (removing it would race)."""
    name = output.name
    for suffix in (".tar.zst", ".tar"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return output.with_name(f".{name}.pull.lock")


@contextlib.contextmanager
def holding(output: Path, work: Path | None = None) -> Iterator[None]:
    """Hold the output's lock for the whole run; a second run for the same output stops in one line.

    ``work`` (a --work-dir work folder, which runs for other outputs could name too) is
    locked as well, by a ``WORK.lock`` file beside it.
    """
    with _locked(lock_path(output), f"{output}: another pull-bundle is writing this bundle",
                 "wait for it to finish, or write elsewhere with -o"):
        if work is None:
            yield
            return
        with _locked(work.with_name(work.name + ".lock"), f"{work}: another pull-bundle is using this work folder",
                     "wait for it to finish, or give another --work-dir"):
            yield


@contextlib.contextmanager
def _locked(path: Path, busy: str, advice: str) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` for the block, or one line naming the holder.

    ``fcntl.flock`` is released by the kernel when the process ends, however it ends, so a
    killed run never leaves a stale lock behind (only an empty hidden file). A run that
    ends normally removes the file; one that locked a file removed meanwhile tries again.
    """
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)      # the folder, made as the writer would
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            raise InputError(f"cannot create the lock file {path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise InputError(f"cannot lock {path}: {exc.strerror or exc}") from None
            raise InputError(busy + (f" (pid {holder})" if holder.isdigit() else "")
                             + f"; {advice} (lock {path})") from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)            # the previous holder removed it between our open and our lock
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)


def written_as(output: Path, split: int | None, compress: str | None) -> bool:
    """Are the volumes on disk the form asked for: the same names, and written with the same ``split``?

    A damaged or unreadable first volume counts as "no": the bundle is written again.
    """
    first = volume_paths(output, 1, compress, split is not None)[0]
    if not first.is_file():
        return False
    try:
        kind = detect(first)
        if (kind == "zstd") != (compress == "zstd"):
            return False
        with open(first, "rb") as f, reading(str(first)):
            tar = open_tar(f, kind)
            for position, member in enumerate(tar):
                if position == 1 and member.name == "volume.yaml" and member.size <= META_CAPS["volume.yaml"]:
                    data = tar.extractfile(member)
                    return data is not None and written_split(data.read()) == split
                if position >= 1:
                    return False
    except (InputError, OperationError, OSError):   # unreadable: not the bundle asked for
        return False
    return False
