"""The skopeo subprocess, for image sources outside any registry only.

Every registry byte moves through mirrorkit's own engine. skopeo stays for what
mirrorkit should not reimplement: reading ``docker-archive:``, ``oci-archive:``,
``oci:`` and ``docker-daemon:`` sources (mirrorkit.transfer.local). These are local
files or a local daemon, so there are no credentials to hand over and no network
faults to retry: one attempt, and its last error line as a one-line error.
"""

from __future__ import annotations

import ctypes
import shutil
import signal
import subprocess

from mirrorkit import interrupt
from mirrorkit.errors import DiskFullError, InputError, NotFoundError, OperationError

SKOPEO = "skopeo"
TIMEOUT = 3600.0
PR_SET_PDEATHSIG = 1


def skopeo_path() -> str:
    path = shutil.which(SKOPEO)
    if not path:
        raise InputError("skopeo is not installed: run 'make setup' or 'apt-get install skopeo'")
    return path


def copy_argv(src: str, dest: str, *, all_images: bool = True) -> list[str]:
    """skopeo copy's argv between local transports: digests preserved, multi-arch kept."""
    argv = [SKOPEO, "--insecure-policy", "copy", "--preserve-digests"]
    if all_images:
        argv.append("--all")
    return [*argv, src, dest]


def last_error(stderr: str) -> str:
    """skopeo's own words: the ``msg="…"`` of its last log line, else its last line."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for line in reversed(lines):
        if 'msg="' in line:
            return line.split('msg="', 1)[1].rstrip('"').replace('\\"', '"')
    return lines[-1] if lines else "no error output"


def run_copy(argv: list[str], what: str, timeout: float = TIMEOUT) -> None:
    """Run one skopeo copy; raise a one-line error naming what was being read when it fails.

    skopeo is asked by the kernel to die with mirrorkit (PR_SET_PDEATHSIG), so even a
    ``kill -9`` of mirrorkit leaves no skopeo behind, still writing to the disk.
    """
    argv = [skopeo_path(), *argv[1:]]
    interrupt.check()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_die_with_parent)
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(proc)
        raise OperationError(f"{what}: skopeo took more than {timeout:.0f} s") from None
    except BaseException:
        _kill(proc)
        raise
    if proc.returncode == 0:
        return
    interrupt.check()
    message = last_error(stderr)
    lowered = message.lower()
    if "no space left on device" in lowered:      # final: mapped to one line by files.full_disk_reported
        raise DiskFullError(f"{what}: {message}")
    if "no such file" in lowered or "not found" in lowered or "does not exist" in lowered:
        raise NotFoundError(f"{what}: {message}")
    raise OperationError(f"{what}: {message}")


def _kill(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait()


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the parent dies (Linux prctl, ignored elsewhere)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
