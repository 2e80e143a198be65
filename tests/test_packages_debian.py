"""Debian's own signed metadata: the closure of a real ``linux-headers-*`` carried, and real apt verifies it.

This machine's ``/var/lib/apt/lists`` holds Debian bookworm-security's real ``InRelease`` (signed by
the Debian archive keys, valid for a week) and the ``main/binary-amd64/Packages`` it covers (3k
packages, the kernels among them; the 63k-package bookworm main index is what ``make bench``
measures the closure against, being too slow for a test). They are served
on loopback as an upstream mirror, with the real ``.deb`` files of the closure (fetched once by
``make setup`` with ``apt-get download``: no test reaches anything but loopback; kit/realdebian.py).
The apt family carries the
closure of the newest ``linux-headers-6.1.0-*-amd64`` against this machine's own dpkg status (a real
Debian package database, standing in for the driver image's), and the real ``apt-get`` then updates
from the carried partial mirror and downloads the closure with ``debian-archive-keyring`` as the only
trusted key.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from kit.aptrepo import StaticServer
from kit.realdebian import Upstream, prepare

from mirrorkit.oci.httpfile import HttpFiles
from mirrorkit.packages.apt import resolve_apt
from mirrorkit.packages.model import Need
from mirrorkit.packages.needs import apt_names

LISTS = Path("/var/lib/apt/lists")
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
STATUS = Path("/var/lib/dpkg/status")


@pytest.fixture(scope="session")
def debian() -> Upstream:
    return prepare(download=False)     # no download in a test: make setup fetched the .debs


def apt(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    opts = [f"-oDir={root}", f"-oDir::State::status={STATUS}", "-oDebug::NoLocking=1", "-oAPT::Architecture=amd64",
            "-oAPT::Architectures::=amd64", "-oAPT::Sandbox::User=root", f"-oDir::Etc::trusted={KEYRING}",
            f"-oDir::Etc::TrustedParts={root}/etc/apt/trusted.gpg.d", "-oDir::Log=" + str(root / "log")]
    return subprocess.run(["apt-get", *opts, *args], capture_output=True, text=True, timeout=300, cwd=root,
                          env={**os.environ, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"}, check=False)


def test_real_debian_closure_carried_and_verified_by_real_apt(tmp_path: Path, debian: Upstream) -> None:
    kernel = debian.kernel
    names, optional, alone = apt_names(kernel)
    need = Need("debian12", "apt", kernel, "amd64", (f"linux-headers-{kernel}",), (), ("node-1",))
    image = tmp_path / "image"
    (image / "var/lib/dpkg").mkdir(parents=True)
    shutil.copyfile(STATUS, image / "var/lib/dpkg/status")
    with StaticServer(debian.root) as upstream:
        source = tmp_path / "debian.sources"
        source.write_text(f"Types: deb\nURIs: {upstream.url}/debian-security\nSuites: bookworm-security\n"
                          "Components: main\n"
                          f"Signed-By: {KEYRING}\n")
        result = resolve_apt(source, "debian12", [need], image, HttpFiles(), tmp_path / "work", False)
    assert not result.missing
    (repo,) = result.repos
    assert len(repo.signed_by) == 40                       # a Debian archive key signed it
    assert "Check-Valid-Until: no" in repo.repo_text       # a week-long Valid-Until must not expire the mirror
    debs = sorted(f.path.rsplit("/", 1)[-1].split("_")[0] for f in repo.files if f.kind == "package")
    assert f"linux-headers-{kernel}" in debs and len(debs) < 20   # only what this dpkg database lacks
    # the far side: the carried files at their original paths, the repo file as the ConfigMap would hold it
    far = tmp_path / "far"
    for f in repo.files:
        target = far / repo.os / repo.name / f.path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(result.files_dir / f.sha256, target)
    root = tmp_path / "apt-root"
    for folder in ("etc/apt/sources.list.d", "etc/apt/trusted.gpg.d", "var/lib/apt/lists/partial",
                   "var/cache/apt/archives/partial", "log"):
        (root / folder).mkdir(parents=True)
    with StaticServer(far) as server:
        (root / "etc/apt/sources.list.d" / repo.repo_file).write_text(
            repo.repo_text.replace("@URL@", f"{server.url}/{repo.os}/{repo.name}"))
        update = apt(root, "update")
        assert update.returncode == 0, update.stdout + update.stderr
        assert "W:" not in update.stderr, update.stderr
        install = apt(root, "install", "-y", "--download-only", "--no-install-recommends", f"linux-headers-{kernel}")
        assert install.returncode == 0, install.stdout + install.stderr
    got = sorted(p.name.split("_")[0] for p in (root / "var/cache/apt/archives").glob("*.deb"))
    assert got == debs
