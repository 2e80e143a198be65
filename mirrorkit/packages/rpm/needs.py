"""What the RHEL/Rocky driver container installs for a kernel, and the dnf variables it runs with.

Facts from NVIDIA's gpu-driver-container (rhel8/rhel9 ``nvidia-driver``): it installs
``elfutils-libelf.$ARCH`` and ``elfutils-libelf-devel.$ARCH``, then ``kernel-headers-$KV`` and
``kernel-devel-$KV``, then the kernel's module files: ``kernel-core-$KV`` on 8, ``kernel-$KV`` on 9
and 10. ``$KV`` is ``uname -r`` (``4.18.0-513.5.1.el8_9.x86_64``), and dnf runs with
``--releasever`` taken from the kernel's ``el8_9`` part (8.9). Later it installs ``gcc-<x.y.z>``
when the image's gcc is not the one that built the kernel (see ``gcc_name``).
"""

from __future__ import annotations

import re

from mirrorkit.errors import InputError

_BASEARCH = {"amd64": "x86_64", "arm64": "aarch64", "ppc64le": "ppc64le", "s390x": "s390x",
             "x86_64": "x86_64", "aarch64": "aarch64"}
_ARCH_SUFFIX = re.compile(r"\.(x86_64|aarch64|ppc64le|s390x)$")
_EL = re.compile(r"\.el(\d+)(?:_(\d+))?")
_MAJOR = re.compile(r"(\d+)")


def basearch(arch: str) -> str:
    """dnf's ``$basearch`` for an OCI architecture (``amd64`` -> ``x86_64``)."""
    try:
        return _BASEARCH[arch]
    except KeyError:
        raise InputError(f"no rpm architecture is known for {arch!r}") from None


def kernel_arch(kernel: str) -> str | None:
    """The architecture suffix of an RHEL ``uname -r`` (``….el8_9.x86_64`` -> ``x86_64``), if any."""
    m = _ARCH_SUFFIX.search(kernel)
    return m.group(1) if m else None


def releasever(kernel: str, os_tag: str = "") -> str:
    """dnf's ``$releasever`` for a kernel: ``el8_9`` -> ``8.9``, ``el9`` -> ``9``.

    Falls back to the OS tag's version (``rocky8.6`` -> ``8.6``) for a kernel string without ``elN``.
    """
    m = _EL.search(kernel)
    if m:
        return m.group(1) + (f".{m.group(2)}" if m.group(2) else "")
    version = re.search(r"(\d+(?:\.\d+)?)", os_tag)
    if version:
        return version.group(1)
    raise InputError(f"kernel {kernel!r}: cannot tell the release (no .elN in it, no version in {os_tag!r})")


def os_major(os_tag: str, kernel: str = "") -> int:
    """The RHEL major version of a node: from the kernel's ``elN`` or else the OS tag."""
    m = _EL.search(kernel) or _MAJOR.search(os_tag)
    if not m:
        raise InputError(f"OS {os_tag!r}: cannot tell its major version")
    return int(m.group(1))


def rpm_names(os_tag: str, kernel: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The names the driver container installs for ``kernel``: (required, optional).

    Names are dnf specs as the container writes them (``kernel-devel-4.18.0-513.5.1.el8_9.x86_64``).
    The container writes ``elfutils-libelf.$ARCH``; the plain name is given here, since the solver
    works in one architecture's pool, where libsolv picks that architecture's package just the same.
    Nothing is optional on RHEL: every install failure stops the pod.
    """
    module_files = "kernel-core" if os_major(os_tag, kernel) <= 8 else "kernel"
    required = ("elfutils-libelf", "elfutils-libelf-devel", f"kernel-headers-{kernel}",
                f"kernel-devel-{kernel}", f"{module_files}-{kernel}")
    return required, ()


def gcc_name(kernel_gcc_version: str) -> str:
    """The package spec the container installs for the kernel's compiler: ``gcc-8.5.0``."""
    return f"gcc-{kernel_gcc_version}"
