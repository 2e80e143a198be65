"""Driver packages for a runtime-compiled Rocky node, end to end, with the real dnf on the far side.

plan (a Rocky 8.9 node) -> pull-bundle --package-source rocky8=FILE.repo -> push-bundle --packages-dir
-> rewrite-config --format driver-repo, then the real ``dnf makecache`` + ``dnf install --downloadonly``
in the driver image's root with exactly the ConfigMap's repo files, gpgcheck and repo_gpgcheck on.
The driver image in the bundle holds the sqlite rpmdb (``var/lib/rpm``) the closure is computed against.

This joins the rpm family (branch pkgrpm) with the pipeline (branch pkgapt): it skips only where
the pipeline is not part of the tree.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result
from kit import dnfroot, rpmrepo
from kit.images import OCI_LAYER_GZIP, Blob, make_image, sha256_digest
from kit.pgpkey import make_key
from kit.push import push_image
from kit.registryd import RegistryServer

from mirrorkit.cli.main import main

KV = f"{rpmrepo.KERNEL_A}.x86_64"


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


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[rpmrepo.TestRepo, Path]]:
    base = tmp_path_factory.mktemp("rpmworld")
    repo = rpmrepo.build(base / "www", make_key(base / "k1", "Test Rocky"), make_key(base / "k2", "Other")).start()
    image = rpmrepo.make_image_root(base / "image", [repo.rpms[s.nevra] for s in repo.specs
                                                    if s.name in rpmrepo.INSTALLED])
    yield repo, image
    repo.stop()


def test_rocky_node_end_to_end_with_real_dnf(tmp_path: Path, world: tuple[rpmrepo.TestRepo, Path],
                                             registry: RegistryServer) -> None:
    repo, image = world
    cr = tmp_path / "driver-cr.yaml"
    cr.write_text("apiVersion: nvidia.com/v1alpha1\nkind: NVIDIADriver\nmetadata: {name: compiled}\n"
                  "spec: {driverType: gpu, repository: nvcr.io/nvidia, image: driver, version: 550.144.03}\n")
    plan = tmp_path / "plan.yaml"
    res = cli("plan", "--nvidiadriver", str(cr), "--node", f"rocky8.9/{KV}", "-o", str(plan))
    assert res.exit_code == 0, res.output
    planned = yaml.safe_load(plan.read_text())
    (need,) = planned["packages"]
    driver_ref = need["driver_image"]
    files = {str(p.relative_to(image)): p.read_bytes() for p in image.rglob("*") if p.is_file()}
    repo_path, tag = driver_ref.split("/", 1)[1].rsplit(":", 1)
    push_image(registry.url, repo_path, tag, make_image("driver", [layer(files)]))

    source = repo.repo_file(tmp_path / "rocky.repo")
    res = cli("pull-bundle", str(plan), "-o", str(tmp_path / "b.tar"), "--source-endpoint",
              f"nvcr.io={registry.url}", "--package-source", f"rocky8={source}", "--format", "json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["package_repos"] == 2
    lock = yaml.safe_load((tmp_path / "b.lock.yaml").read_text())
    carried = {f["path"].rsplit("/", 1)[-1].removesuffix(".rpm") for r in lock["package_repos"]
               for f in r["files"] if f["kind"] == "package"}
    assert carried == rpmrepo.closure(rpmrepo.KERNEL_A)

    packages_dir = tmp_path / "far" / "packages"
    res = cli("push-bundle", str(tmp_path / "b.tar"), "--packages-dir", str(packages_dir))
    assert res.exit_code == 0, res.output
    res = cli("verify", str(tmp_path / "b.tar"), "--packages-dir", str(packages_dir))
    assert res.exit_code == 0, res.output
    server = rpmrepo.StaticServer(packages_dir)
    try:
        out = tmp_path / "driver-repo.yaml"
        res = cli("rewrite-config", str(tmp_path / "b.tar"), "--format", "driver-repo", "--package-url",
                  f"{server.url}/", "-o", str(out))
        assert res.exit_code == 0, res.output
        data = list(yaml.safe_load_all(out.read_text()))[0]["data"]
        assert "ubi.repo" in data            # the image's default repo file is replaced
        got = dnfroot.dnf_download(image, data, need["names"], tmp_path / "dnf", "8.9")
    finally:
        server.stop()
    assert {n.removesuffix(".rpm") for n in got} == rpmrepo.closure(rpmrepo.KERNEL_A)
