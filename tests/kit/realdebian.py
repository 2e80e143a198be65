"""Debian's real signed metadata and the real ``.deb`` files of one kernel's closure, prepared for a test.

``make setup`` calls :func:`prepare` with downloads allowed (it installs things anyway); the tests call
it with downloads refused, so that no test reaches anything but loopback: a missing ``.deb`` then
says to run ``make setup``. Everything is kept in one folder beside the venv and reused while
the machine's ``/var/lib/apt/lists`` stays the same.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from mirrorkit.packages.apt.closure import run_solver

LISTS = Path("/var/lib/apt/lists")
STATUS = Path("/var/lib/dpkg/status")
CACHE = Path(__file__).resolve().parents[2] / ".venv" / "real-debian"


@dataclass
class Upstream:
    root: Path            # web root; the repository is root/debian-security
    kernel: str


def _lists_file(suffix: str) -> Path:
    found = sorted(LISTS.glob(f"*debian-security_dists_bookworm-security_{suffix}*"))
    assert found, f"run apt-get update: {LISTS} has no bookworm-security {suffix}"
    return found[0]


def prepare(cache: Path = CACHE, download: bool = False) -> Upstream:
    """The upstream tree under ``cache``: InRelease and Packages from the apt lists, the closure's .debs."""
    if download and not sorted(LISTS.glob("*debian-security_dists_bookworm-security_InRelease")):
        subprocess.run(["apt-get", "update", "-qq"], check=True, timeout=600)
    dists = cache / "debian-security" / "dists" / "bookworm-security"
    index = dists / "main" / "binary-amd64" / "Packages"
    inrelease = _lists_file("InRelease")
    if not index.is_file() or (dists / "InRelease").read_bytes() != inrelease.read_bytes():
        shutil.rmtree(cache / "debian-security", ignore_errors=True)
        index.parent.mkdir(parents=True)
        shutil.copyfile(inrelease, dists / "InRelease")
        packages = _lists_file("main_binary-amd64_Packages")
        if packages.name.endswith(".lz4"):
            subprocess.run(["unlz4", "-q", "-f", str(packages), str(index)], check=True, timeout=120)
        else:
            shutil.copyfile(packages, index)
    heads = re.findall(rb"^Package: linux-headers-6\.1\.0-(\d+)-amd64$", index.read_bytes(), re.M)
    kernel = f"6.1.0-{max(int(n) for n in heads)}-amd64"
    solution = run_solver([("r", index)], STATUS, "amd64", [f"linux-headers-{kernel}"], [], [], "fixture")
    for pkg in solution.install:                 # the real .debs, fetched once and kept in the cache
        target = cache / "debian-security" / pkg.location
        if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == pkg.sha256:
            continue
        if not download:
            raise AssertionError(f"{target} is missing: run make setup (it fetches the real .deb files once)")
        target.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", "-q", f"{pkg.name}={pkg.version}"], cwd=target.parent, check=True,
                       capture_output=True, timeout=600)
        got = next(target.parent.glob(f"{pkg.name}_*.deb"))
        if got != target:
            got.rename(target)
    return Upstream(cache, kernel)



if __name__ == "__main__":      # make setup: python tests/kit/realdebian.py
    print(prepare(download=True), file=sys.stderr)
