"""A small, real, signed rpm-md repository on loopback: rpms from ``rpmbuild``, ``rpmsign``, ``createrepo_c``.

Two sections shaped like Rocky's BaseOS and AppStream, two kernels (``4.18.0-513.5.1.el8_9`` and
``4.18.0-477.10.1.el8_8``) and decoys, with real Requires between them: ``kernel-devel`` needs gcc
(from AppStream), ``/usr/bin/as`` (a file primary lists) and ``/usr/share/zoneinfo/UTC`` (a file only
``filelists`` lists); ``kernel-core`` needs ``/bin/sh``, which the driver image's rpmdb provides.
Every rpm carries an EdDSA header signature by the test key; ``repomd.xml.asc`` is a detached
armored signature of ``repomd.xml``.

One HTTP root serves variants of the same tree for the refusal tests: ``good``, ``unsigned`` (no
``repomd.xml.asc``), ``tampered-primary`` (primary changed after signing), ``flipped-rpm`` (one byte of
one rpm), ``foreign-rpm`` (rpms signed by another key, metadata signed by the right one). Each is
served at ``<variant>/<releasever>/<BaseOS|AppStream>/x86_64/os/`` for releasevers 8.8 and 8.9.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import struct
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from kit.pgpkey import PGPKey
from mirrorkit.errors import NotFoundError, OperationError

KERNEL_A = "4.18.0-513.5.1.el8_9"
KERNEL_B = "4.18.0-477.10.1.el8_8"
RELEASES = ("8.9", "8.8")
VARIANTS = ("good", "unsigned", "tampered-primary", "flipped-rpm", "foreign-rpm")
# What the test image already has installed (its rpmdb): never carried.
INSTALLED = ("bash", "findutils", "make", "elfutils-libelf")


@dataclass(frozen=True)
class Spec:
    name: str
    version: str
    release: str
    repo: str                           # "BaseOS" or "AppStream"
    arch: str = "x86_64"
    requires: tuple[str, ...] = ()
    files: tuple[tuple[str, int], ...] = ()   # (path, size of random content)
    texts: tuple[tuple[str, str], ...] = ()   # (path, content)

    @property
    def nevra(self) -> str:
        return f"{self.name}-{self.version}-{self.release}.{self.arch}"


# The gcc that "built" each test kernel (kernel-devel's .config): B's is not the repository's newest.
KERNEL_GCC = {KERNEL_A: 80500, KERNEL_B: 80400}


def _kernel(kv: str) -> list[Spec]:
    version, release = kv.split("-", 1)
    config = f"CONFIG_64BIT=y\nCONFIG_CC_IS_GCC=y\nCONFIG_GCC_VERSION={KERNEL_GCC[kv]}\nCONFIG_MODULES=y\n"
    return [
        Spec("kernel-core", version, release, "BaseOS", requires=("linux-firmware", "/bin/sh"),
             files=((f"/lib/modules/{kv}.x86_64/vmlinuz", 40_000),)),
        Spec("kernel-devel", version, release, "BaseOS",
             requires=("elfutils-libelf-devel", "make", "gcc", "findutils", "/usr/bin/as",
                       "/usr/share/zoneinfo/UTC"),
             files=((f"/usr/src/kernels/{kv}.x86_64/Makefile", 30_000),),
             texts=((f"/usr/src/kernels/{kv}.x86_64/.config", config),)),
        Spec("kernel-headers", version, release, "BaseOS", files=((f"/usr/include/linux/k-{kv}.h", 10_000),)),
        Spec("kernel-modules", version, release, "BaseOS", requires=(f"kernel-core = {kv}",),
             files=((f"/lib/modules/{kv}.x86_64/extra.ko", 60_000),)),
    ]


def specs() -> list[Spec]:
    a_version, a_release = KERNEL_A.split("-", 1)
    return [
        *_kernel(KERNEL_A), *_kernel(KERNEL_B),
        Spec("kernel-debug-devel", a_version, a_release, "BaseOS",
             files=(("/usr/src/kernels/debug/Makefile", 30_000),)),
        Spec("elfutils-libelf", "0.189", "3.el8", "BaseOS", files=(("/usr/lib64/libelf.so.1", 5_000),)),
        Spec("elfutils-libelf-devel", "0.189", "3.el8", "BaseOS", requires=("elfutils-libelf = 0.189-3.el8",
             "zlib-devel"), files=(("/usr/include/libelf.h", 5_000),)),
        Spec("zlib-devel", "1.2.11", "25.el8", "BaseOS", files=(("/usr/include/zlib.h", 5_000),)),
        Spec("make", "4.2.1", "11.el8", "BaseOS", files=(("/usr/bin/make", 8_000),)),
        Spec("findutils", "4.6.0", "21.el8", "BaseOS", files=(("/usr/bin/find", 8_000),)),
        Spec("bash", "4.4.20", "4.el8", "BaseOS", files=(("/bin/sh", 2_000), ("/usr/bin/bash", 8_000))),
        Spec("linux-firmware", "20230824", "119.el8", "BaseOS", arch="noarch",
             files=(("/usr/lib/firmware/gpu.bin", 50_000),)),
        Spec("tzdata", "2023c", "1.el8", "BaseOS", arch="noarch", files=(("/usr/share/zoneinfo/UTC", 1_000),)),
        Spec("gcc", "8.5.0", "20.el8", "AppStream", requires=("cpp = 8.5.0-20.el8", "/usr/bin/as"),
             files=(("/usr/bin/gcc", 20_000),)),
        Spec("cpp", "8.5.0", "20.el8", "AppStream", files=(("/usr/bin/cpp", 10_000),)),
        Spec("gcc", "8.4.0", "1.el8", "AppStream", requires=("cpp = 8.4.0-1.el8", "/usr/bin/as"),
             files=(("/usr/bin/gcc", 20_000),)),
        Spec("cpp", "8.4.0", "1.el8", "AppStream", files=(("/usr/bin/cpp", 10_000),)),
        Spec("binutils", "2.30", "123.el8", "AppStream", files=(("/usr/bin/as", 10_000),)),
        Spec("libreoffice-core", "6.4.7.2", "15.el8", "AppStream", files=(("/usr/lib64/libreoffice/big.so", 200_000),)),
    ]


def closure(kv: str) -> set[str]:
    """The packages a kernel's needs pull in against the test image (the expected answer).

    Kernel B was built by gcc 8.4.0: the driver later installs ``gcc-8.4.0`` (a downgrade from the
    8.5.0 that kernel-devel pulled in), so both gccs travel.
    """
    version, release = kv.split("-", 1)
    kernel = {f"{n}-{version}-{release}.x86_64" for n in ("kernel-core", "kernel-devel", "kernel-headers")}
    older_gcc = {"gcc-8.4.0-1.el8.x86_64", "cpp-8.4.0-1.el8.x86_64"} if KERNEL_GCC[kv] == 80400 else set()
    return kernel | older_gcc | {"elfutils-libelf-devel-0.189-3.el8.x86_64", "zlib-devel-1.2.11-25.el8.x86_64",
                     "gcc-8.5.0-20.el8.x86_64", "cpp-8.5.0-20.el8.x86_64", "binutils-2.30-123.el8.x86_64",
                     "linux-firmware-20230824-119.el8.noarch", "tzdata-2023c-1.el8.noarch"}


def _spec_text(group: Sequence[Spec], n: int) -> str:
    """One spec whose subpackages are the given packages (each with its own version): one rpmbuild
    run builds them all (rpmbuild's start-up, not the packages, is what costs)."""
    head = [f"Name: mirrorkit-test-{n}", "Version: 1", "Release: 1", "Summary: test packages", "License: MIT",
            "%description", "Test packages for mirrorkit.", "%install"]
    for spec in group:
        for path, size in spec.files:
            head.append(f"mkdir -p %{{buildroot}}{os.path.dirname(path)}")
            head.append(f"head -c {size} /dev/urandom > %{{buildroot}}{path}")
        for path, text in spec.texts:
            head.append(f"mkdir -p %{{buildroot}}{os.path.dirname(path)}")
            escaped = text.replace("\n", "\\n")
            head.append(f"printf '%%b' '{escaped}' > %{{buildroot}}{path}")
    body = []
    for spec in group:
        body += [f"%package -n {spec.name}", f"Version: {spec.version}", f"Release: {spec.release}",
                 f"Summary: mirrorkit test package {spec.name}"]
        if spec.arch == "noarch":
            body.append("BuildArch: noarch")
        body += [f"Requires: {r}" for r in spec.requires]
        body += [f"%description -n {spec.name}", "A test package for mirrorkit."]
        body += [f"%files -n {spec.name}", *(path for path, _ in spec.files), *(path for path, _ in spec.texts)]
    return "\n".join([*head, *body, ""])


def _run(argv: Sequence[str], env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(list(argv), capture_output=True, timeout=300, check=False, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed: {proc.stderr.decode(errors='replace')[-1500:]}")


def build_rpms(specs_: Sequence[Spec], top: Path) -> dict[str, Path]:
    """Every package built by the real rpmbuild (one call): nevra -> rpm file."""
    spec_dir = top / "SPECS"
    spec_dir.mkdir(parents=True, exist_ok=True)
    groups: list[list[Spec]] = []
    for spec in specs_:       # a name appears once per spec: a second version goes to the next one
        group = next((g for g in groups if all(other.name != spec.name for other in g)), None)
        if group is None:
            groups.append(group := [])
        group.append(spec)
    files = []
    for n, group in enumerate(groups):
        path = spec_dir / f"test-{n}.spec"
        path.write_text(_spec_text(group, n))
        files.append(str(path))
    _run(["rpmbuild", "-bb", "--quiet", "--define", f"_topdir {top}", "--define", "_build_id_links none",
          "--define", "__os_install_post %{nil}", "--define", "_binary_payload w1.gzdio",
          "--target", "x86_64", *files])
    return {spec.nevra: top / "RPMS" / spec.arch / f"{spec.nevra}.rpm" for spec in specs_}


def sign_rpms(rpms: Sequence[Path], key: PGPKey) -> None:
    _run(["rpmsign", "--addsign", "--define", f"_gpg_name {key.fingerprint}", "--define", "__gpg /usr/bin/gpg",
          *(str(p) for p in rpms)], env={**os.environ, "GNUPGHOME": str(key.home)})


def _createrepo(folder: Path) -> None:
    _run(["createrepo_c", "--quiet", str(folder)])


def _tree(root: Path, specs_: Sequence[Spec], rpms: dict[str, Path], meta_key: PGPKey | None) -> None:
    """``root/<BaseOS|AppStream>/x86_64/os/`` with Packages/<letter>/ and signed repodata."""
    for repo in ("BaseOS", "AppStream"):
        base = root / repo / "x86_64" / "os"
        for spec in specs_:
            if spec.repo == repo:
                dest = base / "Packages" / spec.name[0] / rpms[spec.nevra].name
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(rpms[spec.nevra], dest)
        _createrepo(base)
        if meta_key is not None:
            repomd = base / "repodata" / "repomd.xml"
            (base / "repodata" / "repomd.xml.asc").write_bytes(meta_key.detach_sign(repomd.read_bytes()))


@dataclass
class TestRepo:
    """The served variants; ``url(variant)`` is the base that ``$releasever/<Repo>/$basearch/os/`` follows."""

    root: Path
    key: PGPKey
    other_key: PGPKey
    rpms: dict[str, Path]
    specs: list[Spec]
    server: StaticServer | None = field(default=None, repr=False)

    @property
    def port(self) -> int:
        assert self.server is not None, "start() the repository first"
        return self.server.port

    def url(self, variant: str = "good") -> str:
        return f"http://127.0.0.1:{self.port}/{variant}"

    def repo_file(self, path: Path, variant: str = "good", key: Path | None = None, repo_gpgcheck: bool = True,
                  gpgcheck: bool = True) -> Path:
        """A user's ``.repo`` file for a variant: BaseOS and AppStream enabled, one disabled section."""
        keyfile = key or self.key.public_armored
        sections = []
        for sid, repo in (("baseos", "BaseOS"), ("appstream", "AppStream")):
            sections.append(f"[{sid}]\nname=Test {repo} $releasever\n"
                            f"baseurl={self.url(variant)}/$releasever/{repo}/$basearch/os/\n"
                            f"enabled=1\ngpgcheck={int(gpgcheck)}\nrepo_gpgcheck={int(repo_gpgcheck)}\n"
                            f"gpgkey=file://{keyfile}\n")
        sections.append("[extras]\nname=Not reachable\nbaseurl=http://127.0.0.1:9/nowhere/\nenabled=0\n")
        path.write_text("\n".join(sections))
        return path

    def start(self) -> TestRepo:
        self.server = StaticServer(self.root)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


class StaticServer:
    """A plain static HTTP server over a folder on 127.0.0.1 (what nginx would be on the far side)."""

    def __init__(self, folder: Path) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(folder)))
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _flip_byte(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def build(root: Path, key: PGPKey, other_key: PGPKey) -> TestRepo:
    """Build every variant under ``root`` (served by ``TestRepo.start``)."""
    all_specs = specs()
    rpms = build_rpms(all_specs, root / "rpmbuild")
    signed = list(rpms.values())
    sign_rpms(signed, key)
    foreign_dir = root / "foreign-rpms"
    foreign_dir.mkdir()
    foreign = {}
    for nevra, path in rpms.items():
        foreign[nevra] = foreign_dir / path.name
        shutil.copy2(path, foreign[nevra])
    _run(["rpmsign", "--delsign", *(str(p) for p in foreign.values())])
    sign_rpms(list(foreign.values()), other_key)
    _tree(root / "good" / "tree", all_specs, rpms, key)
    _tree(root / "foreign-rpm" / "tree", all_specs, foreign, key)
    for variant in ("unsigned", "tampered-primary", "flipped-rpm"):     # copies of good, then spoilt
        shutil.copytree(root / "good" / "tree", root / variant / "tree")
    for asc in (root / "unsigned" / "tree").rglob("repomd.xml.asc"):
        asc.unlink()
    for variant in VARIANTS:
        for release in RELEASES:
            (root / variant / release).symlink_to("tree")
    baseos = ("tree", "BaseOS", "x86_64", "os")
    primary = next(root.joinpath("tampered-primary", *baseos, "repodata").glob("*-primary.xml.gz"))
    _flip_byte(primary, primary.stat().st_size // 2)
    victim = next(root.joinpath("flipped-rpm", *baseos, "Packages", "k").glob("kernel-devel-4.18.0-513*"))
    _flip_byte(victim, victim.stat().st_size - 100)
    return TestRepo(root, key, other_key, rpms, all_specs)


def make_image_root(root: Path, rpms: Sequence[Path]) -> Path:
    """A driver-image root whose sqlite rpmdb (``var/lib/rpm``) holds ``rpms`` (database entries only)."""
    dbpath = root / "var" / "lib" / "rpm"
    dbpath.mkdir(parents=True)
    _run(["rpm", "--dbpath", str(dbpath), "--initdb"])
    if rpms:
        _run(["rpm", "--dbpath", str(dbpath), "-i", "--justdb", "--nodeps", "--noscripts", "--nosignature",
              "--ignorearch", *(str(p) for p in rpms)])
    (root / "etc" / "dnf").mkdir(parents=True)
    (root / "etc" / "dnf" / "dnf.conf").write_text("[main]\ngpgcheck=1\ninstall_weak_deps=False\nbest=True\n")
    (root / "etc" / "yum.repos.d").mkdir(parents=True)
    (root / "etc" / "yum.repos.d" / "ubi.repo").write_text(
        "[ubi-8-baseos-rpms]\nname=UBI 8 BaseOS\nbaseurl=https://cdn-ubi.example.invalid/ubi8/8/$basearch/baseos/os\n"
        "enabled=1\ngpgcheck=1\n")
    return root


class LoopbackFetcher:
    """A plain httpx Fetcher for the tests (the pipeline gives ``resolve_rpm`` mirrorkit's own)."""

    def __init__(self) -> None:
        self.client = httpx.Client(timeout=30)

    def _get(self, url: str) -> httpx.Response:
        response = self.client.get(url)
        if response.status_code == 404:
            raise NotFoundError(f"{url}: not found (404)")
        if response.status_code != 200:
            raise OperationError(f"{url}: HTTP {response.status_code}")
        return response

    def fetch_bytes(self, url: str) -> bytes:
        return self._get(url).content

    def download(self, url: str, dest: Path, sha256: str | None = None, size: int | None = None) -> None:
        data = self._get(url).content
        if size is not None and len(data) != size:
            raise OperationError(f"{url}: size {len(data)} is not the expected {size}")
        if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
            raise OperationError(f"{url}: sha256 does not match the signed metadata")
        dest.write_bytes(data)


def berkeleydb_copy(image_root: Path, dest: Path) -> Path:
    """The same image with its rpmdb as RHEL 8 keeps it: a BerkeleyDB hash ``Packages`` file.

    Debian's rpm reads BerkeleyDB (``bdb_ro``) but cannot write it, so the real ``db5.3_load`` (db-util)
    writes the hash database from the sqlite rpmdb's own header blobs, keyed by their instance
    numbers as rpm's bdb backend keys them (native-endian 32-bit).
    """
    shutil.copytree(image_root, dest, symlinks=True)
    dbpath = dest / "var" / "lib" / "rpm"
    con = sqlite3.connect(f"file:{dbpath / 'rpmdb.sqlite'}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT hnum, blob FROM Packages").fetchall()
    finally:
        con.close()
    shutil.rmtree(dbpath)
    dbpath.mkdir()
    dump = dest / "packages.dump"
    lines = ["VERSION=3", "format=bytevalue", "type=hash", "HEADER=END"]
    for hnum, blob in rows:
        lines += [" " + struct.pack("=I", hnum).hex(), " " + bytes(blob).hex()]
    dump.write_text("\n".join([*lines, "DATA=END", ""]))
    _run(["db5.3_load", "-f", str(dump), str(dbpath / "Packages")])
    dump.unlink()
    return dest
