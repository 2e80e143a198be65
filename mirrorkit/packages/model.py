"""The types the package families share: a node's need, a carried file, a carried repository.

Both families (apt, rpm) take the same inputs and give the same outputs, so the plan, the bundle,
``push-bundle --packages-dir``, ``serve`` and ``rewrite-config --format driver-repo`` never look
at which family a repository belongs to except to write its repo file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

Family = Literal["apt", "rpm"]
FileKind = Literal["metadata", "package"]


@dataclass(frozen=True)
class Need:
    """What one (OS, kernel, architecture) needs: the names the driver container installs.

    ``os_tag`` is the node's OS as the operator tags it (``rocky8.6``, ``ubuntu22.04``); ``arch`` is the
    OCI architecture (``amd64``, ``arm64``); ``optional`` names may be absent from the repository
    (``linux-modules-$KV``). ``nodes`` are the node names that need it, for error messages.
    ``driver_image`` is the source reference of the driver image those nodes run (its package database
    decides what is already installed). ``download_only`` names (a subset of ``names`` and
    ``optional``) are fetched alone, without their dependencies: the Ubuntu entrypoint only
    ``apt-get download``s ``linux-image-$KV`` and ``linux-modules-$KV`` and unpacks them.
    """

    os_tag: str
    family: Family
    kernel: str
    arch: str
    names: tuple[str, ...]
    optional: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()
    driver_image: str = ""
    download_only: tuple[str, ...] = ()


@dataclass(frozen=True)
class CarriedFile:
    """One file of a carried repository, at its original path relative to the repository root.

    ``sha256`` is checked against the signed metadata before it is kept; the bytes travel in the
    bundle's blob store under that digest, so a package shared by two repositories travels once.
    """

    path: str
    sha256: str
    size: int
    kind: FileKind


@dataclass
class RepoCarry:
    """One repository carried as a partial mirror: its signed metadata and the packages needed.

    ``os`` is the ``--package-source`` key the repository was chosen with (the folder under
    ``--packages-dir`` and ``/packages/`` of ``serve``); ``name`` the repository's own id (yum repo id,
    or a name derived from the apt source line); the far side path of a file is
    ``<os>/<name>/<path>``. ``repo_file`` is the ConfigMap key (file name) the far side's repo file
    gets; ``repo_text`` is that file with ``@URL@`` where the mirror's base URL (``URL/<os>/<name>``)
    goes. ``source`` is the original base URL, without credentials. ``signed_by`` is the OpenPGP
    fingerprint that signed the metadata ("" when ``--allow-unsigned-repo`` let an unsigned one in).
    """

    os: str
    name: str
    family: Family
    source: str
    repo_file: str
    repo_text: str
    signed_by: str
    files: list[CarriedFile] = field(default_factory=list)


@dataclass(frozen=True)
class MissingKernel:
    """A need the repository cannot meet: which names are missing, and the nearest kernels it has."""

    need: Need
    missing: tuple[str, ...]
    nearest: tuple[str, ...]


@dataclass
class FamilyResult:
    """What one family's resolution gives: the repositories to carry and the needs it could not meet.

    ``files_dir`` holds every fetched file under its sha256 hex name, verified, ready to enter the
    bundle's blob store.
    """

    repos: list[RepoCarry]
    missing: list[MissingKernel]
    files_dir: Path


class Fetcher(Protocol):
    """Plain HTTP(S) reads through mirrorkit's one retry policy (implemented in ``mirrorkit.oci``)."""

    def fetch_bytes(self, url: str) -> bytes:
        """A small file (metadata), whole, or a one-line error naming the URL."""
        ...

    def download(self, url: str, dest: Path, sha256: str | None = None, size: int | None = None) -> object:
        """A file to ``dest``, resumed with Range after a cut, its sha256 and size checked when given."""
        ...
