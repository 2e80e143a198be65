"""Driver packages for a runtime-compiled Ubuntu node, end to end, with the real apt on the far side.

A signed apt repository (``dpkg-deb`` packages, ``InRelease`` by a throw-away ``gpg`` key) and a
driver image whose layer holds ``var/lib/dpkg/status`` (``libelf1`` and ``coreutils`` installed) and
the default ``etc/apt/sources.list.d/ubuntu.sources`` are served on loopback. plan ->
pull-bundle --package-source -> push-bundle --packages-dir -> rewrite-config --format driver-repo,
then the real ``apt-get update`` + ``apt-get install --download-only`` in a root of its own, with
exactly the repo files of the emitted ConfigMap, against a static HTTP server over the packages
folder, signatures checked all the way. Then every refusal: one line, exit 1 or 2, nothing written.
"""

from __future__ import annotations

import gzip
import io
import json
import lzma
import os
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result
from kit.aptrepo import AptRepo, StaticServer, build_apt_repo, copy_apt_repo, write_release
from kit.images import OCI_LAYER_GZIP, Blob, make_image, sha256_digest
from kit.pgpkey import PGPKey, make_key
from kit.push import push_image
from kit.registryd import RegistryServer

from mirrorkit.cli.main import main

KV = "5.15.0-131-generic"
DRIVER = "nvcr.io/nvidia/driver:550.144.03-ubuntu22.04"
DEFAULT_SOURCES = ("Types: deb\nURIs: http://archive.ubuntu.com/ubuntu/\nSuites: jammy jammy-updates\n"
                   "Components: main restricted\nSigned-By: /usr/share/keyrings/ubuntu-archive-keyring.gpg\n")


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def layer(files: dict[str, bytes]) -> Blob:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    plain = buf.getvalue()
    return Blob.of(gzip.compress(plain, mtime=0), OCI_LAYER_GZIP, sha256_digest(plain))


@dataclass
class World:
    base: Path
    key: PGPKey
    other: PGPKey
    repo: AptRepo


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    base = tmp_path_factory.mktemp("aptworld")
    key = make_key(base / "gnupg", "Test Ubuntu Archive")
    other = make_key(base / "other", "Someone Else")
    return World(base, key, other, build_apt_repo(base / "web", key))


@pytest.fixture
def upstream(world: World) -> Iterator[StaticServer]:
    with StaticServer(world.base / "web") as server:
        yield server


def push_driver(registry: RegistryServer, repo: AptRepo) -> None:
    status = repo.status_text(["libelf1", "coreutils"]).encode()
    base = layer({"etc/os-release": b"ID=ubuntu\nVERSION_ID=22.04\n"})
    top = layer({"var/lib/dpkg/status": status, "etc/apt/sources.list.d/ubuntu.sources": DEFAULT_SOURCES.encode(),
                 "etc/apt/sources.list": b"# Ubuntu sources have moved to sources.list.d\n"})
    push_image(registry.url, "nvidia/driver", "550.144.03-ubuntu22.04", make_image("driver", [base, top]))


def make_plan(tmp: Path, kernel: str = KV, *more: str) -> Path:
    cr = tmp / "driver-cr.yaml"
    cr.write_text("apiVersion: nvidia.com/v1alpha1\nkind: NVIDIADriver\nmetadata: {name: compiled}\n"
                  "spec: {driverType: gpu, repository: nvcr.io/nvidia, image: driver, version: 550.144.03}\n")
    plan = tmp / "plan.yaml"
    nodes = [arg for k in (kernel, *more) for arg in ("--node", f"ubuntu22.04/{k}")]
    res = cli("plan", "--nvidiadriver", str(cr), *nodes, "-o", str(plan))
    assert res.exit_code == 0, res.output
    return plan


def sources_file(tmp: Path, url: str, key: Path) -> Path:
    path = tmp / "ubuntu.sources"
    path.write_text(f"Types: deb\nURIs: {url}/ubuntu\nSuites: jammy\nComponents: main\nSigned-By: {key}\n")
    return path


def pull(tmp: Path, registry: RegistryServer, plan: Path, source: Path, *extra: str) -> Result:
    return cli("pull-bundle", str(plan), "-o", str(tmp / "b.tar"), "--source-endpoint", f"nvcr.io={registry.url}",
               "--package-source", f"ubuntu22={source}", "--format", "json", *extra)


def apt(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    opts = [f"-oDir={root}", f"-oDir::State::status={root}/var/lib/dpkg/status", "-oDebug::NoLocking=1",
            "-oAPT::Architecture=amd64", "-oAPT::Architectures::=amd64", "-oAPT::Sandbox::User=root",
            f"-oDir::Etc::trusted={root}/etc/apt/trusted.gpg", f"-oDir::Etc::TrustedParts={root}/etc/apt/trusted.gpg.d",
            "-oDir::Cache::pkgcache=", "-oDir::Cache::srcpkgcache=", "-oDir::Log=" + str(root / "log")]
    return subprocess.run(["apt-get", *opts, *args], capture_output=True, text=True, timeout=120, cwd=root,
                          env={**os.environ, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"}, check=False)


def apt_root(root: Path, status: str, repo_files: dict[str, str]) -> None:
    for folder in ("etc/apt/sources.list.d", "etc/apt/apt.conf.d", "etc/apt/preferences.d", "etc/apt/trusted.gpg.d",
                   "var/lib/apt/lists/partial", "var/cache/apt/archives/partial", "var/lib/dpkg", "log"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "var/lib/dpkg/status").write_text(status)
    for name, text in repo_files.items():      # exactly what the operator mounts with subPath
        (root / "etc/apt/sources.list.d" / name).write_text(text)


def test_ubuntu_node_end_to_end_with_real_apt(tmp_path: Path, world: World, upstream: StaticServer,
                                              registry: RegistryServer) -> None:
    push_driver(registry, world.repo)
    plan = make_plan(tmp_path)
    source = sources_file(tmp_path, upstream.url, world.key.public_armored)
    res = pull(tmp_path, registry, plan, source)
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["package_repos"] == 1
    lock = yaml.safe_load((tmp_path / "b.lock.yaml").read_text())
    (repo,) = lock["package_repos"]
    assert repo["signed_by"] == world.key.fingerprint
    packages = sorted(f["path"].rsplit("/", 1)[-1].split("_")[0] for f in repo["files"] if f["kind"] == "package")
    # the closure against the image: libelf1 and coreutils are installed there, so they are not carried;
    # linux-image and linux-modules come alone (their initramfs-tools dependency is not in the repository)
    assert packages == [f"linux-headers-{KV.rsplit('-', 1)[0]}", f"linux-headers-{KV}", f"linux-image-{KV}",
                        f"linux-modules-{KV}", "make"]
    metadata = {f["path"] for f in repo["files"] if f["kind"] == "metadata"}
    assert "dists/jammy/InRelease" in metadata
    assert any("/by-hash/SHA256/" in p for p in metadata)
    blobs = {b["digest"] for b in lock["blobs"]}
    assert all(f"sha256:{f['sha256']}" in blobs for f in repo["files"])

    packages_dir = tmp_path / "far" / "packages"
    res = cli("push-bundle", str(tmp_path / "b.tar"), "--packages-dir", str(packages_dir))
    assert res.exit_code == 0, res.output
    assert "no registry" in res.output
    res = cli("verify", str(tmp_path / "b.tar"), "--packages-dir", str(packages_dir))
    assert res.exit_code == 0, res.output
    # the runbook of a bundle that carries packages prints the far-side package steps, naming the repositories
    res = cli("runbook", str(tmp_path / "b.tar"), "--registry", "harbor.local/gpu")
    assert res.exit_code == 0, res.output
    assert "--packages-dir /srv/gpu-packages" in res.stdout and "--format driver-repo" in res.stdout
    assert f"ubuntu22/{repo['name']}" in res.stdout
    out = tmp_path / "driver-repo.yaml"
    with StaticServer(packages_dir) as far:
        res = cli("rewrite-config", str(tmp_path / "b.tar"), "--format", "driver-repo", "--package-url",
                  f"{far.url}/", "-o", str(out))
        assert res.exit_code == 0, res.output
        docs = list(yaml.safe_load_all(out.read_text()))
        configmap = docs[0]
        data = configmap["data"]
        assert data["ubuntu.sources"].startswith("# Replaced by mirrorkit")   # the image's default, replaced
        (mine,) = [k for k in data if k.startswith("mirrorkit-")]
        assert f"URIs: {far.url}/ubuntu22/{repo['name']}" in data[mine]
        assert "trusted" not in data[mine].lower()
        cr = docs[-1]
        assert cr["kind"] == "NVIDIADriver" and cr["spec"]["repoConfig"] == {"name": configmap["metadata"]["name"]}
        values = yaml.safe_load((tmp_path / "driver-repo.values.yaml").read_text())
        assert values["driver"]["repoConfig"]["configMapName"] == configmap["metadata"]["name"]

        root = tmp_path / "apt-root"
        apt_root(root, world.repo.status_text(["libelf1", "coreutils"]), data)
        update = apt(root, "update")
        assert update.returncode == 0, update.stdout + update.stderr
        assert "W:" not in update.stderr and "NO_PUBKEY" not in update.stdout + update.stderr
        install = apt(root, "install", "-y", "--download-only", "--no-install-recommends", f"linux-headers-{KV}")
        assert install.returncode == 0, install.stdout + install.stderr
        got = sorted(p.name.split("_")[0] for p in (root / "var/cache/apt/archives").glob("*.deb"))
        assert got == [f"linux-headers-{KV.rsplit('-', 1)[0]}", f"linux-headers-{KV}", "make"]
        download = apt(root, "download", f"linux-image-{KV}", f"linux-modules-{KV}")
        assert download.returncode == 0, download.stdout + download.stderr
        # a kernel that was not carried is not there: the far side holds only the closure
        assert apt(root, "download", "linux-image-5.15.0-140-generic").returncode != 0

    # the packages folder is checked again: a flipped byte is found
    deb = next(packages_dir.rglob("make_*.deb"))
    deb.write_bytes(deb.read_bytes()[:-1] + b"X")
    res = cli("verify", str(tmp_path / "b.tar"), "--packages-dir", str(packages_dir))
    assert res.exit_code == 1 and "different" in res.output


def nothing_written(tmp: Path) -> bool:
    return not (tmp / "b.tar").exists() and not (tmp / "b.lock.yaml").exists()


def one_line_error(res: Result) -> str:
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, res.output
    return lines[0]


def test_missing_kernel_lists_nearest_and_writes_nothing(tmp_path: Path, world: World, upstream: StaticServer,
                                                         registry: RegistryServer) -> None:
    push_driver(registry, world.repo)
    plan = make_plan(tmp_path, "5.15.0-135-generic")
    res = pull(tmp_path, registry, plan, sources_file(tmp_path, upstream.url, world.key.public_armored))
    assert res.exit_code == 1
    line = one_line_error(res)
    assert "5.15.0-135-generic" in line and "nearest kernels there: 5.15.0-131-generic, 5.15.0-140-generic" in line
    assert nothing_written(tmp_path)


def test_every_missing_kernel_at_once_even_with_keep_going(tmp_path: Path, world: World, upstream: StaticServer,
                                                           registry: RegistryServer) -> None:
    push_driver(registry, world.repo)
    plan = make_plan(tmp_path, KV, "5.15.0-135-generic", "5.15.0-99-generic")
    res = pull(tmp_path, registry, plan, sources_file(tmp_path, upstream.url, world.key.public_armored),
               "--keep-going")
    assert res.exit_code == 1
    assert "2 kernels have no packages in their repository" in res.output
    assert "5.15.0-135-generic amd64: missing linux-headers-5.15.0-135-generic" in res.output
    assert "5.15.0-99-generic amd64: missing" in res.output
    assert "nearest kernels there: 5.15.0-131-generic" in res.output
    assert nothing_written(tmp_path)


def test_wrong_key_is_refused(tmp_path: Path, world: World, upstream: StaticServer,
                              registry: RegistryServer) -> None:
    push_driver(registry, world.repo)
    res = pull(tmp_path, registry, make_plan(tmp_path),
               sources_file(tmp_path, upstream.url, world.other.public_binary))
    assert res.exit_code == 1
    assert "not signed by any of the given keys" in one_line_error(res)
    assert nothing_written(tmp_path)


@pytest.mark.parametrize("what", ["Packages", "deb"])
def test_tampered_upstream_is_refused(tmp_path: Path, world: World, registry: RegistryServer, what: str) -> None:
    repo = copy_apt_repo(world.repo, tmp_path / "web")
    if what == "Packages":
        path = repo.repo / "dists/jammy/main/binary-amd64/Packages.xz"
        path.write_bytes(lzma.compress(lzma.decompress(path.read_bytes()).replace(b"make", b"mako")))
    else:
        path = repo.repo / repo.debs["make"]
        data = bytearray(path.read_bytes())
        data[-10] ^= 0xFF
        path.write_bytes(bytes(data))
    push_driver(registry, repo)
    with StaticServer(tmp_path / "web") as server:
        source = sources_file(tmp_path, server.url, world.key.public_armored)
        res = pull(tmp_path, registry, make_plan(tmp_path), source)
    assert res.exit_code == 1
    line = one_line_error(res)
    # a changed file is refused by its size or by its sha256, whichever differs first from the signed metadata
    assert ("does not match" in line and "sha256" in line) or "bytes expected" in line, line
    assert nothing_written(tmp_path)


def test_unsigned_repository_needs_allow_unsigned(tmp_path: Path, world: World, registry: RegistryServer) -> None:
    repo = copy_apt_repo(world.repo, tmp_path / "web")
    write_release(repo.repo, world.key, sign=False)
    push_driver(registry, repo)
    plan = make_plan(tmp_path)
    with StaticServer(tmp_path / "web") as server:
        source = sources_file(tmp_path, server.url, world.key.public_armored)
        res = pull(tmp_path, registry, plan, source)
        assert res.exit_code == 1
        assert "unsigned" in one_line_error(res)
        assert nothing_written(tmp_path)
        res = pull(tmp_path, registry, plan, source, "--allow-unsigned-repo")
        assert res.exit_code == 0, res.output
    lock = yaml.safe_load((tmp_path / "b.lock.yaml").read_text())
    assert lock["package_repos"][0]["signed_by"] == ""


def test_detached_release_signature(tmp_path: Path, world: World, registry: RegistryServer) -> None:
    repo = copy_apt_repo(world.repo, tmp_path / "web")
    write_release(repo.repo, world.key, detached=True)
    push_driver(registry, repo)
    with StaticServer(tmp_path / "web") as server:
        res = pull(tmp_path, registry, make_plan(tmp_path),
                   sources_file(tmp_path, server.url, world.key.public_binary))
    assert res.exit_code == 0, res.output
    lock = yaml.safe_load((tmp_path / "b.lock.yaml").read_text())
    paths = {f["path"] for f in lock["package_repos"][0]["files"]}
    assert {"dists/jammy/Release", "dists/jammy/Release.gpg"} <= paths


def test_bad_package_source_flags_are_input_errors(tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    for value, message in [("ubuntu22.04", "expected OS=FILE"), ("ubuntu=/nonexistent", "file not found"),
                           ("../x=/etc/hostname", "is not an OS")]:
        res = cli("pull-bundle", str(plan), "-o", str(tmp_path / "b.tar"), "--package-source", value)
        assert res.exit_code == 2, res.output
        assert message in one_line_error(res)
    assert nothing_written(tmp_path)
    compiled_nowhere = tmp_path / "precompiled.yaml"
    res = cli("plan", "--image", "nvcr.io/nvidia/driver:550", "-o", str(compiled_nowhere))
    assert res.exit_code == 0, res.output
    res = cli("pull-bundle", str(compiled_nowhere), "-o", str(tmp_path / "b.tar"), "--package-source",
              f"ubuntu={tmp_path / 'driver-cr.yaml'}")
    assert res.exit_code == 2 and "lists no driver packages" in one_line_error(res)
