"""The lock's ``package_repos``: driver-package repositories carried as partial mirrors (mirrorkit.packages).

Each repository keeps the distribution's own signed metadata and packages at their original relative
paths; every file is a blob of the bundle under its sha256. Reading trusts nothing: names, paths
(no way out of ``<os>/<name>/`` on the far side), digests and sizes are checked against the bundle.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from mirrorkit.errors import InputError
from mirrorkit.plan import one_line
from mirrorkit.refs import check_digest

MAX_FILE_SIZE = 1 << 40      # as a lock's blobs


@dataclass(frozen=True)
class LockPackageFile:
    """A file of a carried package repository: original relative path, sha256 (its blob), size, kind."""

    path: str
    sha256: str
    size: int
    kind: str   # "metadata" (the distribution's signed metadata, unchanged) or "package"


@dataclass
class LockPackageRepo:
    """A package repository carried as a partial mirror (driver packages; see mirrorkit.packages).

    Far-side path of a file: ``<os>/<name>/<path>``. ``repo_text`` is the repo file for the far side
    with ``@URL@`` where the mirror's base URL goes.
    """

    os: str
    name: str
    family: str
    source: str
    repo_file: str
    repo_text: str
    signed_by: str
    files: list[LockPackageFile] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"os": self.os, "name": self.name, "family": self.family, "source": self.source,
                "repo_file": self.repo_file, "repo_text": self.repo_text, "signed_by": self.signed_by,
                "files": [{"path": f.path, "sha256": f.sha256, "size": f.size, "kind": f.kind}
                          for f in self.files]}


_REPO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_FAMILIES = ("apt", "rpm")
_FILE_KINDS = ("metadata", "package")


def _package_path(value: Any, where: str) -> str:
    """A repository-relative path that cannot leave its folder on the far side (the bundle is untrusted)."""
    path = one_line(value, where, "path") or ""
    parts = path.split("/")
    if (not path or len(path) > 1024 or path.startswith("/") or "\\" in path
            or any(p in ("", ".", "..") for p in parts)):
        raise InputError(f"{where}: unsafe package file path {path!r}")
    return path


def package_repo_from_dict(data: Any, where: str, sizes: dict[str, int]) -> LockPackageRepo:
    if not isinstance(data, dict):
        raise InputError(f"{where}: each package repository must be a mapping")
    names = {k: one_line(data.get(k), where, k) or "" for k in ("os", "name", "family", "repo_file")}
    for key in ("os", "name", "repo_file"):
        if not _REPO_NAME.match(names[key]):
            raise InputError(f"{where}: invalid {key} {names[key]!r}")
    if names["family"] not in _FAMILIES:
        raise InputError(f"{where}: family must be one of {', '.join(_FAMILIES)}, not {names['family']!r}")
    text = data.get("repo_text")
    if not isinstance(text, str) or len(text) > 65536:
        raise InputError(f"{where}: 'repo_text' must be a string")
    files = []
    seen: set[str] = set()
    for n, f in enumerate(_files(data, where)):
        at = f"{where}: files[{n}]"
        if not isinstance(f, dict):
            raise InputError(f"{at}: each file must be a mapping")
        path = _package_path(f.get("path"), at)
        if path in seen:
            raise InputError(f"{at}: {path} is listed twice")
        seen.add(path)
        hexdigest = str(f.get("sha256") or "")
        digest = check_digest(f"sha256:{hexdigest}", f"{at} sha256")
        size = f.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or size > MAX_FILE_SIZE:
            raise InputError(f"{at}: invalid size {size!r}")
        if sizes.get(digest) != size:
            raise InputError(f"{at}: {path} ({digest}) is not carried by the bundle with that size")
        kind = f.get("kind")
        if kind not in _FILE_KINDS:
            raise InputError(f"{at}: kind must be metadata or package, not {kind!r}")
        files.append(LockPackageFile(path, hexdigest, size, str(kind)))
    return LockPackageRepo(os=names["os"], name=names["name"], family=names["family"],
                           source=one_line(data.get("source"), where, "source") or "",
                           repo_file=names["repo_file"], repo_text=text,
                           signed_by=one_line(data.get("signed_by"), where, "signed_by", optional=True) or "",
                           files=files)


def _files(data: dict[str, Any], where: str) -> list[Any]:
    value = data.get("files") or []
    if not isinstance(value, list):
        raise InputError(f"{where}: 'files' must be a list")
    return value
