"""The driver image's installed packages, read from its rpmdb with the real ``rpm``.

RHEL 8 images keep a BerkeleyDB rpmdb (``var/lib/rpm/Packages``), RHEL 9 a sqlite one
(``var/lib/rpm/rpmdb.sqlite``). rpm 4.16+ reads both: it finds the backend from the files present
(Debian's rpm 4.18 has the read-only ``bdb_ro`` backend), so no database format is parsed here.
One ``rpm -qa --qf`` prints each package's name, EVR, arch and the dependency arrays a solver needs,
including the file list (a new package may require ``/bin/sh``, which only a file list can provide).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from mirrorkit.errors import InputError, OperationError

DB_PATHS = ("var/lib/rpm", "usr/lib/sysimage/rpm")
_TIMEOUT = 300
_FORMAT = ("@\t%{NAME}\t%{EPOCHNUM}\t%{VERSION}\t%{RELEASE}\t%{ARCH}\n"
           "[P\t%{PROVIDENAME}\t%{PROVIDEFLAGS}\t%{PROVIDEVERSION}\n]"
           "[R\t%{REQUIRENAME}\t%{REQUIREFLAGS}\t%{REQUIREVERSION}\n]"
           "[C\t%{CONFLICTNAME}\t%{CONFLICTFLAGS}\t%{CONFLICTVERSION}\n]"
           "[O\t%{OBSOLETENAME}\t%{OBSOLETEFLAGS}\t%{OBSOLETEVERSION}\n]"
           "[F\t%{FILENAMES}\n]")

Dependency = tuple[str, int, str]    # name, rpm sense flags, version ("" when unversioned)


@dataclass
class InstalledPackage:
    name: str
    epoch: int
    version: str
    release: str
    arch: str
    provides: list[Dependency] = field(default_factory=list)
    requires: list[Dependency] = field(default_factory=list)
    conflicts: list[Dependency] = field(default_factory=list)
    obsoletes: list[Dependency] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    @property
    def evr(self) -> str:
        return (f"{self.epoch}:" if self.epoch else "") + f"{self.version}-{self.release}"


def find_dbpath(image_root: Path) -> Path | None:
    """The rpmdb folder inside an extracted image root, or None when the image has none."""
    for rel in DB_PATHS:
        folder = image_root / rel
        if (folder / "rpmdb.sqlite").is_file() or (folder / "Packages").is_file() or (folder / "Packages.db").is_file():
            return folder
    return None


def _dep(fields: list[str]) -> Dependency:
    name, flags, version = (fields + ["", "", ""])[:3]
    return name, int(flags) if flags.isdigit() else 0, version


def parse_query(text: str) -> list[InstalledPackage]:
    """The packages in the output of ``rpm -qa --qf _FORMAT``."""
    packages: list[InstalledPackage] = []
    current: InstalledPackage | None = None
    for line in text.splitlines():
        fields = line.split("\t")
        tag = fields[0]
        if tag == "@" and len(fields) >= 6:
            current = InstalledPackage(fields[1], int(fields[2]) if fields[2].isdigit() else 0,
                                       fields[3], fields[4], fields[5])
            if current.name != "gpg-pubkey":      # imported keys are pseudo-packages, not software
                packages.append(current)
        elif current is None:
            continue
        elif tag == "P":
            current.provides.append(_dep(fields[1:]))
        elif tag == "R":
            current.requires.append(_dep(fields[1:]))
        elif tag == "C":
            current.conflicts.append(_dep(fields[1:]))
        elif tag == "O":
            current.obsoletes.append(_dep(fields[1:]))
        elif tag == "F" and len(fields) > 1:
            current.files.append(fields[1])
    return packages


def read_installed(image_root: Path | None) -> list[InstalledPackage]:
    """The image's installed packages; none for no image root or an image without an rpmdb.

    The database is copied to a scratch folder first: rpm may want to create lock or WAL files next
    to it, and the extracted image stays untouched.
    """
    if image_root is None:
        return []
    dbpath = find_dbpath(image_root)
    if dbpath is None:
        return []
    if shutil.which("rpm") is None:
        raise OperationError("rpm is not installed: it reads the driver image's package database")
    with tempfile.TemporaryDirectory(prefix="mirrorkit-rpmdb-") as tmp:
        copy = Path(tmp) / "rpm"
        shutil.copytree(dbpath, copy, symlinks=False)
        try:
            proc = subprocess.run(["rpm", "--dbpath", str(copy), "-qa", "--qf", _FORMAT], capture_output=True,
                                  timeout=_TIMEOUT, check=False, env={**os.environ, "LC_ALL": "C"})
        except subprocess.TimeoutExpired:
            raise OperationError(f"{dbpath}: rpm did not read the package database in {_TIMEOUT} s") from None
    if proc.returncode != 0:
        reason = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise InputError(f"{dbpath}: rpm cannot read the image's package database "
                         f"({reason[-1] if reason else 'rpm failed'})")
    return parse_query(proc.stdout.decode("utf-8", "replace"))
