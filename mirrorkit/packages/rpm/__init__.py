"""The rpm family: a yum ``.repo`` source resolved to the partial mirrors RHEL/Rocky nodes need.

For each enabled repository (its ``baseurl`` expanded per node: ``$releasever`` from the kernel,
``$basearch`` from the node's architecture, the image's own ``/etc/dnf/vars``):

1. ``repodata/repomd.xml`` is fetched and its detached signature ``repomd.xml.asc`` checked by gpgv
   against the ``gpgkey=`` file (refused when unsigned, unless ``allow_unsigned``; a bad signature
   is always refused);
2. every file repomd lists is fetched and checked against repomd's checksum: all of them travel, so
   dnf on the far side finds exactly what the signed repomd promises;
3. libsolv computes each node's closure relative to the driver image's rpmdb (``solver``);
4. each package is fetched with the checksum from ``primary`` and, where ``gpgcheck=1``, its header
   signature checked by ``rpmkeys`` against the same key.

Nothing is regenerated: the far side serves the original signed metadata and the packages at their
``location href`` paths, and the image's own dnf verifies them with keys it already trusts.

Not handled (each refused in one line or left as dnf would see it): ``mirrorlist``/``metalink`` without
a ``baseurl``, TLS client certificates (the RHEL CDN's ``sslclientcert``: use a Satellite or mirror
URL), ``xml:base`` locations, and dnf's modularity filter (libsolv sees modular packages as plain
ones; the kernel packages and the base gcc are not modular).
"""

from __future__ import annotations

import configparser
import hashlib
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from mirrorkit.errors import InputError, NotFoundError, OperationError
from mirrorkit.packages.model import CarriedFile, FamilyResult, Fetcher, MissingKernel, Need, RepoCarry
from mirrorkit.packages.openpgp import verify_detached
from mirrorkit.packages.rpm.kernelgcc import kernel_gcc_version
from mirrorkit.packages.rpm.needs import basearch, gcc_name, kernel_arch, releasever, rpm_names
from mirrorkit.packages.rpm.repofile import (
    RepoSection,
    carry_name,
    dnf_variables,
    expand,
    far_side_text,
    image_variables,
    key_files,
    parse_repo_file,
)
from mirrorkit.packages.rpm.repomd import RepoDataFile, decompress, file_digest, parse_repomd, safe_relative
from mirrorkit.packages.rpm.rpmdb import InstalledPackage, read_installed
from mirrorkit.packages.rpm.rpmsig import check_signatures
from mirrorkit.packages.rpm.solver import ClosureSolver, Pick, SiteMetadata

__all__ = ["IMAGE_PATHS", "resolve_rpm", "rpm_names"]

# What the pipeline extracts from the driver image into ``image_root`` (``imagefs.read_paths`` globs):
# the rpmdb (RHEL 8 BerkeleyDB or RHEL 9 sqlite), the dnf variables (Rocky's $contentdir) and
# settings (install_weak_deps), the repo files the ConfigMap must replace, and the keys that
# ``gpgkey=file:///etc/pki/rpm-gpg/…`` names when the workstation does not have them.
IMAGE_PATHS = ("var/lib/rpm/*", "usr/lib/sysimage/rpm/*", "etc/dnf/vars/*", "etc/yum/vars/*", "etc/dnf/dnf.conf",
               "etc/yum.repos.d/*.repo", "etc/pki/rpm-gpg/*")


_SIGNATURE = "repodata/repomd.xml.asc"


@dataclass
class _Site:
    """One repository at one expanded baseurl, fetched and verified."""

    section: RepoSection
    url: str
    release: str
    arch: str
    keys: list[Path]
    signed_by: str = ""
    metadata: list[CarriedFile] = field(default_factory=list)
    packages: dict[str, CarriedFile] = field(default_factory=dict)
    solver_input: SiteMetadata | None = None


def _base(url: str) -> str:
    return url.rstrip("/") + "/"


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def _weak_deps(image_root: Path | None) -> bool:
    """dnf's ``install_weak_deps`` as the driver image sets it (dnf's default is on)."""
    if image_root is None:
        return True
    conf = image_root / "etc/dnf/dnf.conf"
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    try:
        parser.read_string(conf.read_text(encoding="utf-8", errors="replace"))
        value = parser.get("main", "install_weak_deps", fallback="1").strip().lower()
    except (OSError, configparser.Error):
        return True
    return value not in ("0", "false", "no", "off")


class _Store:
    """Verified files under their sha256 hex name in ``files_dir`` (each fetched once)."""

    def __init__(self, files_dir: Path, scratch: Path, fetcher: Fetcher) -> None:
        self.files_dir = files_dir
        self.scratch = scratch
        self.fetcher = fetcher
        self.count = 0

    def next_id(self) -> int:
        self.count += 1
        return self.count

    def keep_bytes(self, data: bytes) -> tuple[str, int]:
        digest = hashlib.sha256(data).hexdigest()
        target = self.files_dir / digest
        if not target.exists():
            tmp = self.scratch / f"bytes-{self.next_id()}"
            tmp.write_bytes(data)
            tmp.replace(target)
        return digest, len(data)

    def fetch(self, url: str, checksum_type: str, checksum: str, size: int | None, what: str) -> tuple[Path, int]:
        """The file at ``url`` checked against (checksum_type, checksum); its stored path and size."""
        if checksum_type == "sha256" and (self.files_dir / checksum).is_file():
            path = self.files_dir / checksum
            return path, path.stat().st_size
        tmp = self.scratch / f"download-{self.next_id()}"
        self.fetcher.download(url, tmp, checksum if checksum_type == "sha256" else None, size)
        if file_digest(tmp, checksum_type) != checksum:
            tmp.unlink(missing_ok=True)
            raise OperationError(f"{what}: {checksum_type} does not match the signed metadata (altered or corrupt)")
        sha256 = checksum if checksum_type == "sha256" else file_digest(tmp, "sha256")
        target = self.files_dir / sha256
        tmp.replace(target)
        return target, target.stat().st_size


def _fetch_metadata(site: _Site, store: _Store, meta_dir: Path, allow_unsigned: bool) -> None:
    """repomd.xml (signature checked), then every file it lists (checksums checked)."""
    base = _base(site.url)
    where = f"{_without_credentials(base)}repodata/repomd.xml"
    repomd = store.fetcher.fetch_bytes(base + "repodata/repomd.xml")
    try:
        signature: bytes | None = store.fetcher.fetch_bytes(base + _SIGNATURE)
    except NotFoundError:
        signature = None
    if signature is not None and (site.keys or not allow_unsigned):
        site.signed_by = verify_detached(repomd, signature, site.keys, what=where)
    elif not allow_unsigned:
        raise OperationError(f"{where}: the repository is not signed (no repomd.xml.asc); refused "
                             "(--allow-unsigned-repo carries it anyway)")
    digest, size = store.keep_bytes(repomd)
    site.metadata.append(CarriedFile("repodata/repomd.xml", digest, size, "metadata"))
    if signature is not None:
        digest, size = store.keep_bytes(signature)
        site.metadata.append(CarriedFile("repodata/repomd.xml.asc", digest, size, "metadata"))
    listed: list[RepoDataFile] = parse_repomd(repomd, where)
    opened: dict[str, Path] = {}
    for entry in listed:
        path, size = store.fetch(base + entry.href, entry.checksum_type, entry.checksum, entry.size,
                                 f"{_without_credentials(base)}{entry.href}")
        site.metadata.append(CarriedFile(entry.href, file_digest(path, "sha256") if entry.checksum_type != "sha256"
                                         else entry.checksum, size, "metadata"))
        if entry.type in ("primary", "filelists"):
            opened[entry.type] = decompress(path, meta_dir / f"{store.next_id()}-{entry.type}.xml", entry.href)
    site.solver_input = SiteMetadata(f"{site.section.id}@{site.url}", opened["primary"], opened.get("filelists"))


def _kernel_gcc(need: Need, picks: Sequence[Pick], by_key: dict[str, _Site], store: _Store,
                installed: Sequence[InstalledPackage]) -> str | None:
    """``gcc-X.Y.Z`` when the kernel was built by a gcc the image does not have, as the driver decides.

    The version comes from the closure's ``kernel-devel`` (its ``.config``); None when the image's gcc
    is that version or the kernel does not say.
    """
    devel = next((p for p in picks if p.nevra.startswith("kernel-devel-")), None)
    if devel is None:
        return None
    site = by_key[devel.site]
    base = _base(site.url)
    safe_relative(devel.location, f"{_without_credentials(site.url)} primary")
    path, _ = store.fetch(base + devel.location, devel.checksum_type, devel.checksum, devel.size or None,
                          f"{_without_credentials(base)}{devel.location}")
    if site.section.gpgcheck:       # its signature before its payload is read
        check_signatures([(path, devel.location)], site.keys, _without_credentials(site.url))
    version = kernel_gcc_version(path)
    if version is None or any(p.name == "gcc" and p.version == version for p in installed):
        return None
    return gcc_name(version)


def _describe(need: Need) -> str:
    nodes = f" (nodes {', '.join(need.nodes)})" if need.nodes else ""
    return f"{need.os_tag} kernel {need.kernel} {need.arch}{nodes}"


def resolve_rpm(source_file: Path, os_key: str, needs: Sequence[Need], image_root: Path | None,
                fetcher: Fetcher, work: Path, allow_unsigned: bool) -> FamilyResult:
    """Resolve every need against the repositories of ``source_file``; what to carry and what is missing.

    ``image_root`` holds the files the pipeline extracted from the driver image (``IMAGE_PATHS``), or
    None for an empty installed set. ``work`` is a scratch folder; the verified files end up in
    ``work/files`` under their sha256 hex names (``FamilyResult.files_dir``).
    """
    sections = [s for s in parse_repo_file(source_file) if s.enabled]
    image_vars = image_variables(image_root)
    installed = read_installed(image_root)
    weak_deps = _weak_deps(image_root)
    files_dir = work / "files"
    files_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="rpm-", dir=work))
    try:
        return _resolve(sections, os_key, needs, image_root, image_vars, installed, weak_deps,
                        _Store(files_dir, scratch, fetcher), scratch, allow_unsigned)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _resolve(sections: list[RepoSection], os_key: str, needs: Sequence[Need], image_root: Path | None,
             image_vars: dict[str, str], installed: list[InstalledPackage], weak_deps: bool, store: _Store,
             scratch: Path, allow_unsigned: bool) -> FamilyResult:
    groups: dict[tuple[str, str], list[Need]] = {}
    for need in needs:
        if need.family != "rpm":
            raise InputError(f"{_describe(need)}: not an rpm need (family {need.family})")
        arch = kernel_arch(need.kernel) or basearch(need.arch)
        groups.setdefault((releasever(need.kernel, need.os_tag), arch), []).append(need)
    sites, group_sites = _sites(sections, groups, image_root, image_vars, allow_unsigned)
    meta_dir = scratch / "metadata"
    meta_dir.mkdir()
    for site in sites.values():
        _fetch_metadata(site, store, meta_dir, allow_unsigned)
    missing: list[MissingKernel] = []
    picked: dict[str, list[Pick]] = {}
    by_key = {s.solver_input.key: s for s in sites.values() if s.solver_input is not None}
    for group_key, group in groups.items():
        inputs = [s.solver_input for s in group_sites[group_key] if s.solver_input is not None]
        solver = ClosureSolver(installed, inputs, group_key[1], weak_deps)
        for need in group:
            picks = _solve_need(need, solver, by_key, store, installed, missing)
            for pick in picks:
                picked.setdefault(pick.site, []).append(pick)
    repos = []
    for site in sites.values():
        assert site.solver_input is not None
        chosen = {p.location: p for p in picked.get(site.solver_input.key, [])}
        if chosen:     # a repository no node needs a package from is not carried
            repos.append(_carry(site, chosen, store, os_key))
    return FamilyResult(repos=repos, missing=missing, files_dir=store.files_dir)


def _sites(sections: list[RepoSection], groups: dict[tuple[str, str], list[Need]], image_root: Path | None,
           image_vars: dict[str, str], allow_unsigned: bool,
           ) -> tuple[dict[tuple[str, str], _Site], dict[tuple[str, str], list[_Site]]]:
    """Each enabled section at each (release, arch) the needs ask for: one site per distinct baseurl."""
    sites: dict[tuple[str, str], _Site] = {}
    group_sites: dict[tuple[str, str], list[_Site]] = {}
    for release, arch in groups:
        variables = dnf_variables(release, arch, image_vars)
        for section in sections:
            url = expand(section.baseurl, variables, section.where)
            if urlsplit(url).scheme not in ("http", "https"):
                raise InputError(f"{section.where}: baseurl {url!r} is not an http(s) URL")
            key = (section.id, url)
            if key not in sites:
                if not section.gpgcheck and not allow_unsigned:
                    raise InputError(f"{section.where}: gpgcheck is off, so its packages would travel unchecked; "
                                     "refused (--allow-unsigned-repo carries it anyway)")
                sites[key] = _Site(section, url, release, arch, key_files(section, image_root, variables))
            group_sites.setdefault((release, arch), []).append(sites[key])
    return sites, group_sites


def _solve_need(need: Need, solver: ClosureSolver, by_key: dict[str, _Site], store: _Store,
                installed: Sequence[InstalledPackage], missing: list[MissingKernel]) -> list[Pick]:
    """One need's closure (with the gcc step), or nothing and a MissingKernel appended to ``missing``."""
    optional = [name for name in need.optional if solver.available(name)]
    solution = solver.solve([*need.names, *optional], need.kernel, _describe(need))
    if solution.missing:
        missing.append(MissingKernel(need, solution.missing, solution.nearest))
        return []
    picks = list(solution.picks)
    gcc = _kernel_gcc(need, picks, by_key, store, installed)
    if gcc is not None:
        if not solver.available(gcc):
            missing.append(MissingKernel(need, (gcc,), ()))
            return []
        # The driver installs gcc-X.Y.Z after the rest: both steps' packages travel.
        picks += solver.solve([*need.names, *optional, gcc], need.kernel, _describe(need)).picks
    return picks


def _carry(site: _Site, chosen: dict[str, Pick], store: _Store, os_key: str) -> RepoCarry:
    """Fetch and check the chosen packages of one site; the repository as it travels."""
    base = _base(site.url)
    shown = _without_credentials(base)
    labelled = []
    for location, pick in sorted(chosen.items()):
        safe_relative(location, f"{shown} primary")
        path, size = store.fetch(base + location, pick.checksum_type, pick.checksum, pick.size or None,
                                 f"{shown}{location}")
        sha256 = pick.checksum if pick.checksum_type == "sha256" else file_digest(path, "sha256")
        site.packages[location] = CarriedFile(location, sha256, size, "package")
        labelled.append((path, location))
    if site.section.gpgcheck:
        check_signatures(labelled, site.keys, shown)
    name = carry_name(site.section, site.release, site.arch)
    files = {f.path: f for f in site.metadata}
    for location, carried in site.packages.items():
        if location in files:
            raise OperationError(f"{shown}: package {location} has the path of a metadata file")
        files[location] = carried
    return RepoCarry(os=os_key, name=name, family="rpm", source=_without_credentials(site.url),
                     repo_file=f"{os_key}-{name}.repo",
                     repo_text=far_side_text(site.section, name, site.section.gpgcheck,
                                             site.section.repo_gpgcheck and _SIGNATURE in files),
                     signed_by=site.signed_by, files=sorted(files.values(), key=lambda f: f.path))
