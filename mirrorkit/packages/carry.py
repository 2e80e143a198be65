"""One pass over every ``--package-source``: which needs each covers, the image's database, the families.

``--package-source OS=FILE``: OS is matched against each need's OS (the node's, ``rocky8.6``) as the
longest prefix (``rocky8.6`` beats ``rocky8`` beats ``rocky``). FILE decides the family: a yum
``.repo`` file is rpm, anything else an apt sources file. For each source the needs it covers are
grouped by driver image; that image's package database (and, for rpm, its repo files) is read from
its layers (``imagefs``) into a folder the family resolves against, so only what the image lacks is
carried. Repositories met twice (two driver images, same source) are merged file by file.

Every need a source cannot meet is collected, never raised one by one, so the user sees every
missing kernel (with the nearest kernels the repository has) in one error.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mirrorkit.errors import InputError, OperationError
from mirrorkit.packages.imagefs import OpenBlob, read_paths
from mirrorkit.packages.model import Family, FamilyResult, Fetcher, MissingKernel, Need, RepoCarry

_OS_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
APT_IMAGE_PATHS = ("var/lib/dpkg/status",)


def rpm_image_paths() -> tuple[str, ...]:
    """What the rpm family reads from a driver image: its rpmdb, dnf variables and config, repo files, keys."""
    from mirrorkit.packages.rpm import IMAGE_PATHS

    return tuple(IMAGE_PATHS)


@dataclass(frozen=True)
class PackageSource:
    os: str
    path: Path
    family: Family


def parse_package_source(text: str) -> PackageSource:
    """``OS=FILE`` (``--package-source``), the file checked now, before anything is fetched."""
    key, sep, file = text.partition("=")
    key, file = key.strip().lower(), file.strip()
    if not sep or not key or not file:
        raise InputError(f"--package-source {text!r}: expected OS=FILE, e.g. ubuntu22.04=ubuntu.sources")
    if not _OS_KEY.match(key):
        raise InputError(f"--package-source {text!r}: {key!r} is not an OS such as ubuntu22.04, rocky8 or rocky")
    path = Path(file)
    if not path.is_file():
        raise InputError(f"--package-source {key}={file}: file not found")
    return PackageSource(key, path, "rpm" if path.suffix == ".repo" else "apt")


def match_source(os_tag: str, sources: Sequence[PackageSource]) -> PackageSource | None:
    """The source whose OS is the longest prefix of ``os_tag``."""
    hits = [s for s in sources if os_tag.lower().startswith(s.os)]
    return max(hits, key=lambda s: len(s.os)) if hits else None


Resolver = Callable[[Path, str, Sequence[Need], "Path | None", Fetcher, Path, bool], FamilyResult]


def family_resolver(family: Family) -> Resolver:
    """The family's ``resolve_*``; rpm only when the rpm family is part of this build."""
    if family == "apt":
        from mirrorkit.packages.apt import resolve_apt

        return resolve_apt
    try:
        from mirrorkit.packages.rpm import resolve_rpm  # type: ignore[import-not-found,attr-defined,unused-ignore]
    except ImportError:
        raise InputError("rpm package sources are not available in this build") from None
    return resolve_rpm  # type: ignore[no-any-return,unused-ignore]


@dataclass
class Carried:
    repos: list[RepoCarry] = field(default_factory=list)
    missing: list[MissingKernel] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)     # sha256 hex -> verified file
    uncovered: list[Need] = field(default_factory=list)


def _image_root(need: Need, manifests: dict[str, bytes], open_blob: OpenBlob, family: Family,
                folder: Path) -> Path | None:
    """The driver image's package database (and repo files) written under ``folder``; None: no image."""
    manifest = manifests.get(need.driver_image)
    if manifest is None:
        return None
    patterns = APT_IMAGE_PATHS if family == "apt" else rpm_image_paths()
    found = read_paths(manifest, open_blob, patterns, need.arch, what=need.driver_image)
    for rel, data in found.items():
        target = folder.joinpath(*rel.split("/"))   # imagefs names are normalised: no '..', not absolute
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return folder


def carry(needs: Sequence[Need], sources: Sequence[PackageSource], manifests: dict[str, bytes],
          open_blob: OpenBlob, fetcher: Fetcher, work: Path, allow_unsigned: bool) -> Carried:
    """Resolve every need through its source; ``manifests`` maps driver image names to their manifests."""
    out = Carried()
    groups: dict[tuple[PackageSource, str], list[Need]] = {}
    for need in needs:
        source = match_source(need.os_tag, sources)
        if source is None:
            out.uncovered.append(need)
            continue
        if source.family != need.family:
            raise InputError(f"--package-source {source.os}={source.path}: a {source.family} source, but "
                             f"{need.os_tag} nodes install {need.family} packages")
        groups.setdefault((source, need.driver_image), []).append(need)
    merged: dict[tuple[str, str], RepoCarry] = {}
    for n, ((source, _image), group) in enumerate(groups.items()):
        resolve = family_resolver(source.family)
        folder = work / f"source-{n}"
        root = _image_root(group[0], manifests, open_blob, source.family, folder / "image")
        result = resolve(source.path, source.os, group, root, fetcher, folder, allow_unsigned)
        out.missing += result.missing
        for repo in result.repos:
            for f in repo.files:
                path = result.files_dir / f.sha256
                if not path.is_file():
                    raise OperationError(f"{repo.os}/{repo.name}: {f.path} was not fetched")
                out.files.setdefault(f.sha256, path)
            have = merged.get((repo.os, repo.name))
            if have is None:
                merged[(repo.os, repo.name)] = repo
                continue
            paths = {f.path: f for f in have.files}
            for f in repo.files:
                if f.path in paths and paths[f.path].sha256 != f.sha256:
                    raise OperationError(f"{repo.os}/{repo.name}: {f.path} changed while it was fetched "
                                         "(the repository was updated meanwhile): run again")
                paths[f.path] = f
            have.files = sorted(paths.values(), key=lambda f: f.path)
    out.repos = list(merged.values())
    return out


def missing_message(missing: Sequence[MissingKernel]) -> str:
    """Every need no repository could meet, one line each, with the nearest kernels there."""
    lines = []
    for m in missing:
        nodes = f" (nodes {', '.join(m.need.nodes)})" if m.need.nodes else ""
        near = f"; nearest kernels there: {', '.join(m.nearest)}" if m.nearest else \
            "; the repository has no kernel packages"
        lines.append(f"{m.need.os_tag} kernel {m.need.kernel} {m.need.arch}{nodes}: "
                     f"missing {', '.join(m.missing)}{near}")
    if len(lines) == 1:
        return f"no packages for {lines[0]}"
    return f"{len(lines)} kernels have no packages in their repository:\n  " + "\n  ".join(lines)
