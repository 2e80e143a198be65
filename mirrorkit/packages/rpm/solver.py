"""The dependency closure of a node's names, relative to the driver image's installed set, by libsolv.

Why libsolv (the ``solv`` wheel), measured on this machine (scripts/bench_packages_rpm.py,
BENCHMARKS.md): it is the solver dnf itself runs on, it reads rpm-md ``primary``/``filelists``
natively, pip-installs on any connected workstation (no dnf, no RHEL host, no system Python) and
solves in-process in milliseconds (65 packages out of a generated 40k-package primary in 0.03 s,
42 MB peak). ``dnf --installroot … install --assumeno`` on the test repository took 3 to 4 s for the
resolution alone, needs a writable copy of the image root and a dnf cache per call, and fetches the
metadata itself, outside mirrorkit's retry policy and signature checks. The real dnf is kept for what
only it can prove: the far side's check in the tests (``tests/kit/dnfroot.py``) runs
``dnf install --downloadonly`` against the carried mirror.

The installed set comes from ``rpmdb.read_installed`` (the wheel has no rpmdb reader): each package
becomes a solvable with its provides, requires, conflicts, obsoletes and files, so a new package
that needs ``/bin/sh`` or an installed library is satisfied by the image, as dnf would see it.
Only the wheel's rpm-md subset of the bindings is used, so Debian's ``python3-solv`` works as well.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import solv

from mirrorkit.errors import OperationError
from mirrorkit.packages.rpm.rpmdb import Dependency, InstalledPackage

_SELECT = (solv.Selection.SELECTION_NAME | solv.Selection.SELECTION_CANON | solv.Selection.SELECTION_DOTARCH
           | solv.Selection.SELECTION_REL)
_SENSE_LESS, _SENSE_GREATER, _SENSE_EQUAL = 2, 4, 8


@dataclass(frozen=True)
class SiteMetadata:
    """One fetched, verified repository: its key (the expanded baseurl) and its uncompressed metadata."""

    key: str
    primary: Path
    filelists: Path | None


@dataclass(frozen=True)
class Pick:
    """A package the closure needs, and where its repository lists it."""

    site: str
    location: str
    checksum_type: str
    checksum: str
    size: int
    nevra: str


@dataclass(frozen=True)
class Solution:
    picks: tuple[Pick, ...]
    missing: tuple[str, ...]
    nearest: tuple[str, ...]


def _dep_id(pool: solv.Pool, dep: Dependency) -> int | None:
    name, flags, version = dep
    if name.startswith("rpmlib("):       # rpm's own feature markers: never provided by a package
        return None
    if name.startswith("("):             # a rich dependency: libsolv parses it
        rich = pool.parserpmrichdep(name)
        return int(rich.id) if rich is not None else None
    nid = int(pool.str2id(name))
    sense = (solv.REL_LT if flags & _SENSE_LESS else 0) | (solv.REL_GT if flags & _SENSE_GREATER else 0) \
        | (solv.REL_EQ if flags & _SENSE_EQUAL else 0)
    if not version or not sense:
        return nid
    return int(pool.rel2id(nid, pool.str2id(version), sense))


def _add_installed(pool: solv.Pool, installed: Sequence[InstalledPackage]) -> solv.Repo:
    repo = pool.add_repo("@System")
    keys = ((solv.SOLVABLE_PROVIDES, "provides"), (solv.SOLVABLE_REQUIRES, "requires"),
            (solv.SOLVABLE_CONFLICTS, "conflicts"), (solv.SOLVABLE_OBSOLETES, "obsoletes"))
    for pkg in installed:
        s = repo.add_solvable()
        s.name, s.evr, s.arch = pkg.name, pkg.evr, pkg.arch
        for key, attr in keys:
            for dep in getattr(pkg, attr):
                dep_id = _dep_id(pool, dep)
                if dep_id is not None:
                    s.add_deparray(key, dep_id)
        s.add_deparray(solv.SOLVABLE_PROVIDES, pool.rel2id(pool.str2id(pkg.name), pool.str2id(pkg.evr), solv.REL_EQ))
        for path in pkg.files:
            s.add_deparray(solv.SOLVABLE_PROVIDES, pool.str2id(path))
    repo.internalize()
    return repo


def _load(repo: solv.Repo, path: Path, what: str, flags: int) -> None:
    f = solv.xfopen(str(path))
    if f is None:
        raise OperationError(f"{repo.name}: cannot open its {what}")
    try:
        if not repo.add_rpmmd(f, "FL" if what == "filelists" else None, flags):
            raise OperationError(f"{repo.name}: its {what} does not load ({repo.pool.errstr})")
    finally:
        f.close()


def _evrcmp(a: solv.XSolvable, b: solv.XSolvable) -> int:
    """rpm's version order, as libsolv computes it."""
    return int(a.evrcmp(b))


class ClosureSolver:
    """A libsolv pool for one (release, architecture): the image's installed set plus the repositories."""

    def __init__(self, installed: Sequence[InstalledPackage], sites: Sequence[SiteMetadata], arch: str,
                 weak_deps: bool) -> None:
        self.pool = solv.Pool()
        self.pool.setarch(arch)
        self.arch = arch
        self.weak_deps = weak_deps
        self.sites = list(sites)
        self.filelists_loaded = False
        self.pool.installed = _add_installed(self.pool, installed)
        self.repos: dict[str, solv.Repo] = {}
        for site in sites:
            repo = self.pool.add_repo(site.key)
            _load(repo, site.primary, "primary", 0)
            self.repos[site.key] = repo
        self._index()

    def _index(self) -> None:
        self.pool.addfileprovides()
        self.pool.createwhatprovides()

    def _load_filelists(self) -> bool:
        """Every repository's full file lists, for file dependencies primary does not cover."""
        if self.filelists_loaded:
            return False
        self.filelists_loaded = True
        loaded = False
        for site in self.sites:
            if site.filelists is not None:
                _load(self.repos[site.key], site.filelists, "filelists", solv.Repo.REPO_EXTEND_SOLVABLES)
                loaded = True
        if loaded:
            self._index()
        return loaded

    def available(self, name: str) -> bool:
        """Whether any repository (or the image) has a package matching the dnf spec ``name``."""
        return not self.pool.select(name, _SELECT).isempty()

    def solve(self, names: Sequence[str], kernel: str, describe: str) -> Solution:
        """The packages to carry for ``names`` (not those installed), or the names no repository has."""
        jobs = []
        missing = []
        for name in names:
            sel = self.pool.select(name, _SELECT)
            if sel.isempty():
                missing.append(name)
            else:
                jobs += sel.jobs(solv.Job.SOLVER_INSTALL)
        if missing:
            return Solution((), tuple(missing), self.nearest(missing, kernel))
        while True:
            solver = self.pool.Solver()
            if not self.weak_deps:
                solver.set_flag(solv.Solver.SOLVER_FLAG_IGNORE_RECOMMENDED, 1)
            problems = solver.solve(jobs)
            if not problems:
                break
            if not self._load_filelists():
                text = "; ".join(str(p) for p in problems[:3])
                raise OperationError(f"{describe}: the repositories cannot satisfy it: {text}")
        picks = []
        for s in solver.transaction().newsolvables():
            if s.repo == self.pool.installed:
                continue
            location, _ = s.lookup_location()
            chk = s.lookup_checksum(solv.SOLVABLE_CHECKSUM)
            if not location or chk is None:
                raise OperationError(f"{s.repo.name}: {s} has no location or checksum in primary")
            picks.append(Pick(s.repo.name, location, chk.typestr(), chk.hex(),
                              int(s.lookup_num(solv.SOLVABLE_DOWNLOADSIZE)), str(s)))
        return Solution(tuple(sorted(picks, key=lambda p: p.nevra)), (), ())

    def nearest(self, missing: Sequence[str], kernel: str, around: int = 2) -> tuple[str, ...]:
        """The kernels the repositories do have next to ``kernel`` in version order (``evr.arch``).

        Looked up by the first missing name that carries the kernel (``kernel-devel-$KV``).
        """
        arch = self.arch
        evr = kernel
        for candidate in (".x86_64", ".aarch64", ".ppc64le", ".s390x"):
            if kernel.endswith(candidate):
                evr, arch = kernel[: -len(candidate)], candidate[1:]
        base = next((n[: -len(kernel) - 1] for n in missing if n.endswith(f"-{kernel}")), None)
        if base is None:
            return ()
        have = [s for s in self.pool.solvables_iter()
                if s.repo != self.pool.installed and s.name == base and s.arch == arch]
        if not have:
            return ()
        # Ordered in a scratch pool: a solvable added to (and removed from) the solving pool would
        # leave its provides index stale for the next need.
        scratch = solv.Pool()
        scratch.setarch(self.arch)
        repo = scratch.add_repo("versions")
        copies = []
        for s in [*have, None]:
            c = repo.add_solvable()
            c.name, c.evr, c.arch = base, (s.evr if s is not None else evr), arch
            copies.append(c)
        probe = copies[-1]
        ordered = sorted(copies, key=functools.cmp_to_key(_evrcmp))
        at = ordered.index(probe)
        near = ordered[max(0, at - around): at] + ordered[at + 1: at + 1 + around]
        seen: list[str] = []
        for s in near:
            text = f"{s.evr}.{s.arch}"
            if text not in seen:
                seen.append(text)
        return tuple(seen)
