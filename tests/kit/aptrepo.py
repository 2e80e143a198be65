"""A real, signed apt repository on loopback: ``dpkg-deb`` packages, an ``InRelease`` signed by ``gpg``.

Ubuntu-style names for two kernels (``5.15.0-131-generic``, ``5.15.0-140-generic``) and a decoy
(``5.15.0-131-lowlatency``): ``linux-headers-$KV`` depends on ``linux-headers-<base>`` (which needs
``make``) and on ``libelf1``; ``linux-image-$KV`` on ``linux-modules-$KV`` and on ``initramfs-tools``
(absent: the driver container only downloads the image). ``bigdecoy`` is never needed. The Release
lists ``main/binary-amd64/Packages`` plain, ``.gz`` and ``.xz``, says ``Acquire-By-Hash: yes``, and
is clear-signed into ``InRelease`` (or, ``detached=True``, ``Release`` + ``Release.gpg``).

    repo = build_apt_repo(tmp / "repo", key)          # key: kit.pgpkey.make_key(...)
    with StaticServer(repo.root) as http: ...          # http.url + "/ubuntu"
    repo.status_text(["libelf1", "coreutils"])        # a dpkg status with these installed
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import lzma
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from kit.pgpkey import PGPKey

KERNELS = ("5.15.0-131-generic", "5.15.0-140-generic")
DECOY = "5.15.0-131-lowlatency"
SUITE = "jammy"


@dataclass
class Pkg:
    name: str
    version: str
    arch: str = "amd64"
    depends: str = ""
    size: int = 2000
    essential: bool = False


def _packages() -> list[Pkg]:
    out = [Pkg("make", "4.3-4.1"), Pkg("libelf1", "0.186-1"), Pkg("coreutils", "8.32-4.1", essential=True),
           Pkg("bigdecoy", "1.0", size=200_000)]
    for kv in (*KERNELS, DECOY):
        base = kv.rsplit("-", 1)[0]
        out += [Pkg(f"linux-headers-{kv}", "1.0", depends=f"linux-headers-{base}, libelf1 (>= 0.142)"),
                Pkg(f"linux-image-{kv}", "1.0", depends=f"linux-modules-{kv}, initramfs-tools", size=30_000),
                Pkg(f"linux-modules-{kv}", "1.0", size=20_000)]
        if not any(p.name == f"linux-headers-{base}" for p in out):
            out.append(Pkg(f"linux-headers-{base}", "1.0", arch="all", depends="make, coreutils", size=10_000))
    return out


def _control(p: Pkg) -> str:
    text = (f"Package: {p.name}\nVersion: {p.version}\nArchitecture: {p.arch}\n"
            f"Maintainer: Test <test@example.invalid>\nSection: kernel\nPriority: optional\n")
    if p.essential:
        text += "Essential: yes\n"
    if p.depends:
        text += f"Depends: {p.depends}\n"
    return text + f"Description: test package {p.name}\n"


def _build_deb(p: Pkg, work: Path, out: Path) -> bytes:
    root = work / f"{p.name}_{p.version}"
    (root / "DEBIAN").mkdir(parents=True, exist_ok=True)
    (root / "DEBIAN" / "control").write_text(_control(p))
    payload = root / "usr" / "share" / "doc" / p.name
    payload.mkdir(parents=True, exist_ok=True)
    (payload / "blob").write_bytes(hashlib.shake_256(p.name.encode()).digest(p.size))
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(out)],
                   check=True, capture_output=True, timeout=60)
    return out.read_bytes()


@dataclass
class AptRepo:
    root: Path                       # served as the web root; the repository is root/ubuntu
    key: PGPKey
    packages: list[Pkg]
    debs: dict[str, str] = field(default_factory=dict)     # package name -> pool path

    @property
    def repo(self) -> Path:
        return self.root / "ubuntu"

    def status_text(self, installed: list[str]) -> str:
        """A dpkg status file with these packages installed (as the driver image's would be)."""
        out = []
        for p in self.packages:
            if p.name in installed:
                out.append(f"Package: {p.name}\nStatus: install ok installed\n" + _control(p).split("\n", 1)[1])
        return "\n".join(out)

    def total_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.repo.rglob("*") if f.is_file())


def build_apt_repo(root: Path, key: PGPKey, detached: bool = False, sign: bool = True) -> AptRepo:
    repo = AptRepo(root, key, _packages())
    base = root / "ubuntu"
    stanzas = []
    for p in repo.packages:
        rel = f"pool/main/l/{p.name}/{p.name}_{p.version}_{p.arch}.deb"
        data = _build_deb(p, root / ".build", base / rel)
        repo.debs[p.name] = rel
        stanzas.append(_control(p).replace("Description:", f"Filename: {rel}\nSize: {len(data)}\n"
                                           f"SHA256: {hashlib.sha256(data).hexdigest()}\nDescription:"))
    index = "\n".join(stanzas).encode()
    folder = base / "dists" / SUITE / "main" / "binary-amd64"
    folder.mkdir(parents=True, exist_ok=True)
    forms = {"Packages": index, "Packages.gz": gzip.compress(index, mtime=0), "Packages.xz": lzma.compress(index)}
    for name, data in forms.items():
        (folder / name).write_bytes(data)
    write_release(base, key, detached=detached, sign=sign)
    return repo


def copy_apt_repo(repo: AptRepo, root: Path) -> AptRepo:
    """The same repository in another web root (to tamper with, or to sign another way)."""
    shutil.copytree(repo.root / "ubuntu", root / "ubuntu")
    return AptRepo(root, repo.key, repo.packages, dict(repo.debs))


def write_release(base: Path, key: PGPKey, detached: bool = False, sign: bool = True) -> None:
    """(Re)write ``dists/jammy``'s Release over the Packages indices there: InRelease, Release.gpg or unsigned."""
    folder = base / "dists" / SUITE / "main" / "binary-amd64"
    forms = {name: (folder / name).read_bytes() for name in ("Packages", "Packages.gz", "Packages.xz")}
    sums = "".join(f" {hashlib.sha256(d).hexdigest()} {len(d):>8} main/binary-amd64/{n}\n" for n, d in forms.items())
    release = (f"Origin: Ubuntu\nLabel: Ubuntu\nSuite: {SUITE}\nCodename: {SUITE}\n"
               "Date: Thu, 21 Apr 2022 17:16:08 UTC\nArchitectures: amd64\nComponents: main\n"
               "Acquire-By-Hash: yes\nNo-Support-for-Architecture-all: Packages\n"
               f"Description: mirrorkit test archive\nSHA256:\n{sums}").encode()
    dists = base / "dists" / SUITE
    for name in ("InRelease", "Release", "Release.gpg"):
        (dists / name).unlink(missing_ok=True)
    if not sign:
        (dists / "Release").write_bytes(release)
    elif detached:
        (dists / "Release").write_bytes(release)
        (dists / "Release.gpg").write_bytes(key.detach_sign(release, armor=True))
    else:
        (dists / "InRelease").write_bytes(key.clearsign(release))


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class StaticServer:
    """A static HTTP server over a folder on 127.0.0.1 (a random port): what nginx would be."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(root)))
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> StaticServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
