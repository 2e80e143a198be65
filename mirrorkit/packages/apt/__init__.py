"""The apt family: an apt sources file -> the signed metadata and the closure each node needs.

For every ``deb`` entry of the sources file: the suites' ``InRelease`` (or ``Release`` +
``Release.gpg``) verified with the keyring ``signed-by`` names, the ``Packages`` index of every
component for the nodes' architectures checked by the hashes in it, then the closure of the needed
names against the driver image's own ``var/lib/dpkg/status`` (libsolv; see ``closure``), and every
chosen ``.deb`` fetched and checked against the sha256 and size of its signed index. ``linux-image``
and ``linux-modules`` are taken alone (the entrypoint only ``apt-get download``s them).

Each repository root (URI) becomes one :class:`RepoCarry` named after it; the far side's repo file
keeps the suites, components and ``signed-by`` of the original with ``@URL@`` as its URI, so the
image's own apt checks the distribution's signature with the keys it already has. A suite whose
Release carries ``Valid-Until`` (Debian's and Ubuntu's updates and security suites: one week) gets
``check-valid-until=no`` in the far side's file: carried metadata ages behind an air gap, and its
signature is still checked.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from mirrorkit.errors import InputError
from mirrorkit.packages.apt.closure import Chosen, run_solver
from mirrorkit.packages.apt.release import SuiteIndex, fetch_suite, safe_path
from mirrorkit.packages.apt.sources import AptEntry, parse_sources
from mirrorkit.packages.model import CarriedFile, FamilyResult, Fetcher, MissingKernel, Need, RepoCarry

STATUS = "var/lib/dpkg/status"
IMAGE_PATHS = (STATUS,)   # what the apt family reads from the driver image (mirrorkit.packages.imagefs)


def repo_name(uri: str) -> str:
    """``http://archive.ubuntu.com/ubuntu`` -> ``archive.ubuntu.com-ubuntu``: a safe folder name."""
    rest = uri.split("://", 1)[-1]
    rest = rest.split("@", 1)[-1]             # never a credential in a name
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", rest).strip("-.")
    return (name or "repo")[:100]


def _fold(value: str) -> str:
    """A deb822 multi-line value (an inline key): continuation lines indented, empty ones as ``.``."""
    lines = value.strip().splitlines()
    return "\n".join([lines[0]] + [f" {ln.strip()}" if ln.strip() else " ." for ln in lines[1:]])


def _render(entries: list[AptEntry], expires: bool) -> str:
    """The far side's repo file for one repository root (``@URL@`` in place of its URI)."""
    parts = []
    for e in entries:
        arch = e.options.get("architectures") or e.options.get("arch") or ""
        if e.deb822:
            text = f"Types: deb\nURIs: @URL@\nSuites: {' '.join(e.suites)}\nComponents: {' '.join(e.components)}\n"
            if arch:
                text += f"Architectures: {arch}\n"
            if expires:
                text += "Check-Valid-Until: no\n"
            if e.signed_by_text:
                text += f"Signed-By: {_fold(e.signed_by_text)}\n"
            parts.append(text)
        else:
            opts = [f"signed-by={e.signed_by_text}"] if e.signed_by_text else []
            opts += [f"arch={arch}"] if arch else []
            opts += ["check-valid-until=no"] if expires else []
            bracket = f"[{' '.join(opts)}] " if opts else ""
            parts.append(f"deb {bracket}@URL@ {e.suites[0]} {' '.join(e.components)}\n")
    return "\n".join(parts)


def _kernel_of(name: str, prefix: str) -> str:
    return name[len(prefix):]


def _natural(text: str) -> list[tuple[int, object]]:
    return [(0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", text) if p]


def nearest_kernels(kernel: str, kernels: Sequence[str], count: int = 2) -> tuple[str, ...]:
    """The kernels just below and just above ``kernel`` in version order (same flavour first)."""
    flavour = kernel.rsplit("-", 1)[-1] if "-" in kernel else ""
    same = [k for k in kernels if flavour and k.endswith("-" + flavour)] or list(kernels)
    ordered = sorted(set(same), key=_natural)
    key = _natural(kernel)
    half = max(1, count // 2)
    below = [k for k in ordered if _natural(k) < key][-half:]
    above = [k for k in ordered if _natural(k) > key][:count - len(below)]
    return tuple(below + above)


def resolve_apt(source_file: Path, os_key: str, needs: Sequence[Need], image_root: Path | None,
                fetcher: Fetcher, work: Path, allow_unsigned: bool) -> FamilyResult:
    """Carry what ``needs`` take from the repositories of ``source_file`` (an apt sources file).

    ``image_root`` holds the driver image's ``var/lib/dpkg/status`` (read from its layers by
    ``imagefs``); None: nothing counts as installed. ``work`` is a scratch folder; fetched files land
    in ``work/files`` under their sha256.
    """
    files_dir = work / "files"
    files_dir.mkdir(parents=True, exist_ok=True)
    scratch = work / "apt"
    scratch.mkdir(parents=True, exist_ok=True)
    entries = parse_sources(source_file, scratch / "keys")
    bases: dict[str, list[AptEntry]] = {}
    for e in entries:
        bases.setdefault(e.uri, []).append(e)
    names: dict[str, str] = {}
    for uri in bases:
        name = repo_name(uri)
        while name in names.values():
            name += "-2"
        names[uri] = name
    files: dict[str, dict[str, CarriedFile]] = {uri: {} for uri in bases}
    signers: dict[str, str] = {}
    expires: dict[str, bool] = {uri: False for uri in bases}
    status = image_root / STATUS if image_root is not None and (image_root / STATUS).is_file() else None
    missing: list[MissingKernel] = []
    for arch in sorted({n.arch for n in needs}):
        indices: list[tuple[str, Path]] = []
        repo_of: dict[str, str] = {}
        for n, e in enumerate(entries):
            for suite in e.suites:
                got: SuiteIndex = fetch_suite(e.uri, suite, e.components, arch, e.keys, fetcher, files_dir,
                                              scratch, allow_unsigned, e.where)
                for f in got.files:
                    files[e.uri][f.path] = f
                signers.setdefault(e.uri, got.signed_by)
                expires[e.uri] = expires[e.uri] or bool(got.fields.get("Valid-Until"))
                rid = f"{n}:{suite}"
                repo_of[rid] = e.uri
                indices += [(rid, path) for path in got.indices]
        for need in [x for x in needs if x.arch == arch]:
            alone = list(need.download_only)
            install = [x for x in need.names if x not in alone]
            prefixes = sorted({x.replace(need.kernel, "") for x in need.names if need.kernel in x})
            solution = run_solver(indices, status, arch, install, alone, prefixes,
                                  f"{source_file} for {need.os_tag} {need.kernel}")
            lacking = tuple(x for x in solution.missing if x not in need.optional)
            if lacking:
                prefix = next((p for p in prefixes if p + need.kernel in lacking), prefixes[0] if prefixes else "")
                kernels = [_kernel_of(x, prefix) for x in solution.listed.get(prefix, [])]
                missing.append(MissingKernel(need, lacking, nearest_kernels(need.kernel, kernels)))
                continue
            for chosen in solution.install + solution.alone:
                _fetch(chosen, repo_of[chosen.repo], fetcher, files_dir, files)
    repos = []
    for uri, group in bases.items():
        name = names[uri]
        suffix = ".sources" if group[0].deb822 else ".list"
        repos.append(RepoCarry(os=os_key, name=name, family="apt", source=uri,
                               repo_file=f"mirrorkit-{os_key}-{name}{suffix}",
                               repo_text=_render(group, expires[uri]), signed_by=signers.get(uri, ""),
                               files=sorted(files[uri].values(), key=lambda f: f.path)))
    return FamilyResult(repos=repos, missing=missing, files_dir=files_dir)


def _fetch(chosen: Chosen, uri: str, fetcher: Fetcher, files_dir: Path,
           files: dict[str, dict[str, CarriedFile]]) -> None:
    path = safe_path(chosen.location, f"{uri}: {chosen.name}")
    if not path.endswith(".deb"):
        raise InputError(f"{uri}: {chosen.name}: {path} is not a .deb")
    target = files_dir / chosen.sha256
    if not target.exists():
        fetcher.download(f"{uri}/{path}", target, sha256=chosen.sha256, size=chosen.size)
    files[uri][path] = CarriedFile(path, chosen.sha256, chosen.size, "package")
