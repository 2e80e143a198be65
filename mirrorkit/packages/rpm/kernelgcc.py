"""Which gcc built a kernel, read from its ``kernel-devel`` package, for the driver's ``gcc-<version>`` rule.

The driver container reads ``gcc version X.Y.Z`` from the kernel's version string and installs
``gcc-X.Y.Z`` when the image's gcc (``rpm -qa gcc``) is another version (or absent). RPM headers do
not record the compiler, but ``kernel-devel`` ships the kernel's ``.config``, whose
``CONFIG_GCC_VERSION`` (Linux 4.18 and later: 80500 for 8.5.0) is that same compiler. The payload is
unpacked by the real ``rpm2cpio`` and the one file is found in its cpio stream (newc format), read
as it streams: a kernel-devel payload is ~60 MB and only a few KB of it are wanted.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import IO

from mirrorkit.errors import OperationError

_CONFIG = re.compile(r"^\./usr/src/kernels/[^/]+/\.config$")
_GCC = re.compile(rb"^CONFIG_GCC_VERSION=(\d+)\s*$", re.MULTILINE)
_NEWC = b"070701"
_TRAILER = "TRAILER!!!"
_MAX_CONFIG = 4 << 20


def _read(stream: IO[bytes], size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            raise OperationError("kernel-devel payload ends early (corrupt cpio stream)")
        data += chunk
    return data


def _skip(stream: IO[bytes], size: int) -> None:
    while size > 0:
        chunk = stream.read(min(size, 1 << 20))
        if not chunk:
            raise OperationError("kernel-devel payload ends early (corrupt cpio stream)")
        size -= len(chunk)


def _pad(n: int) -> int:
    return (4 - n % 4) % 4


def config_from_payload(stream: IO[bytes]) -> bytes | None:
    """The kernel ``.config`` from a newc cpio stream, or None when the package has none."""
    while True:
        header = stream.read(110)
        if len(header) < 110 or header[:6] != _NEWC:
            return None
        size = int(header[54:62], 16)
        name_size = int(header[94:102], 16)
        name = _read(stream, name_size + _pad(110 + name_size))[: name_size - 1].decode("utf-8", "replace")
        if name == _TRAILER:
            return None
        if _CONFIG.match(name) and size <= _MAX_CONFIG:
            return _read(stream, size)
        _skip(stream, size + _pad(size))


def gcc_version_of_config(config: bytes) -> str | None:
    """``CONFIG_GCC_VERSION=80500`` -> ``8.5.0``."""
    m = _GCC.search(config)
    if not m:
        return None
    number = int(m.group(1))
    return f"{number // 10000}.{number // 100 % 100}.{number % 100}"


def kernel_gcc_version(kernel_devel: Path) -> str | None:
    """The gcc version that built the kernel of a ``kernel-devel`` rpm, or None when it does not say."""
    try:
        proc = subprocess.Popen(["rpm2cpio", str(kernel_devel)], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)
    except FileNotFoundError:
        raise OperationError("rpm2cpio is not installed: it reads the kernel's .config") from None
    assert proc.stdout is not None
    try:
        config = config_from_payload(proc.stdout)
    finally:
        proc.stdout.close()
        proc.kill()
        proc.wait()
    return gcc_version_of_config(config) if config is not None else None
