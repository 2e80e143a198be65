"""Local image sources (docker-archive:, oci-archive:, oci:, docker-daemon:) read through skopeo."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result
from kit.images import DOCKER_MANIFEST, OCI_MANIFEST, Image, make_image, make_layer
from kit.push import push_image
from kit.registryd import RegistryServer

from mirrorkit.cli.main import main
from mirrorkit.errors import InputError
from mirrorkit.oci.layout import BlobStore
from mirrorkit.plan import split_image_arg
from mirrorkit.transfer.local import import_image, is_local

DRIVER = "nvcr.io/nvidia/driver:550.127.05-5.15.0-131-generic-ubuntu22.04"


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


@pytest.mark.parametrize(("text", "name", "local"), [
    ("nvcr.io/nvidia/driver:550", "nvcr.io/nvidia/driver:550", None),
    (f"docker-archive:/srv/driver.tar={DRIVER}", DRIVER, "docker-archive:/srv/driver.tar"),
    (f"docker-archive:rel/driver.tar={DRIVER}", DRIVER, "docker-archive:/base/rel/driver.tar"),
    (f"oci-archive:/srv/a=b.tar={DRIVER}", DRIVER, "oci-archive:/srv/a=b.tar"),       # '=' in a path: last one
    (f"oci:/srv/layout:v1={DRIVER}", DRIVER, "oci:/srv/layout:v1"),
    (f"oci:layout={DRIVER}", DRIVER, "oci:/base/layout"),
    ("docker-daemon:example.com/team/driver:1", "example.com/team/driver:1", "docker-daemon:example.com/team/driver:1"),
    ("docker-daemon:local/driver:1=nvcr.io/nvidia/driver:1", "nvcr.io/nvidia/driver:1",
     "docker-daemon:local/driver:1"),
])
def test_image_argument_syntax(text: str, name: str, local: str | None) -> None:
    assert split_image_arg(text, "--image", Path("/base")) == (name, local)
    assert is_local(local or name) == (local is not None)


@pytest.mark.parametrize(("text", "message"), [
    ("docker-archive:/srv/driver.tar", "name the image after '='"),
    ("oci-archive:=nvcr.io/x:1", "expected oci-archive:SOURCE=IMAGE-NAME"),
    ("docker-archive:/srv/d.tar=Not A Ref", "Not A Ref"),
])
def test_bad_local_image_arguments_are_input_errors(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        split_image_arg(text, "--image")


def test_plan_refuses_an_unnamed_archive_in_one_line(tmp_path: Path) -> None:
    res = cli("plan", "--image", "docker-archive:driver.tar")
    assert res.exit_code == 2
    assert res.output.strip().splitlines() == ["error: --image: 'docker-archive:driver.tar': name the image after "
                                               "'=', e.g. docker-archive:driver.tar=nvcr.io/nvidia/driver:TAG"]


@pytest.fixture
def driver_archive(tmp_path: Path, registry: RegistryServer) -> tuple[Path, Image]:
    """A real docker-archive tar, as `docker save` or `skopeo copy ... docker-archive:` leaves it."""
    image = make_image("local/driver", [make_layer("local/base", 200_000, docker=True),
                                         make_layer("local/kmod", 50_000, docker=True)],
                       docker=True)
    push_image(registry.url, "build/driver", "custom", image)
    archive = tmp_path / "driver.tar"
    subprocess.run(["skopeo", "--insecure-policy", "copy", "--src-tls-verify=false",
                    f"docker://{registry.host}/build/driver:custom", f"docker-archive:{archive}:{DRIVER}"],
                   check=True, capture_output=True)
    return archive, image


@pytest.mark.parametrize("transport", ["docker-archive", "oci-archive", "oci"])
def test_import_image_brings_every_blob_hashed_into_the_store(tmp_path: Path, registry: RegistryServer,
                                                              driver_archive: tuple[Path, Image],
                                                              transport: str) -> None:
    archive, image = driver_archive
    source = f"docker-archive:{archive}"
    if transport != "docker-archive":                 # the same image as skopeo writes it to the other forms
        where = tmp_path / ("driver-oci.tar" if transport == "oci-archive" else "layout")
        subprocess.run(["skopeo", "--insecure-policy", "copy", source, f"{transport}:{where}:driver"],
                       check=True, capture_output=True)
        source = f"{transport}:{where}" + (":driver" if transport == "oci" else "")
    store = BlobStore(tmp_path / "work")
    digest, media_type = import_image(source, store)
    assert media_type == (DOCKER_MANIFEST if transport == "docker-archive" else OCI_MANIFEST)
    manifest = store.read(digest)
    assert "sha256:" + hashlib.sha256(manifest).hexdigest() == digest
    doc = json.loads(manifest)
    named = [doc["config"]["digest"], *(layer["digest"] for layer in doc["layers"])]
    assert len(doc["layers"]) == 2
    for blob in named:
        data = store.read(blob)
        assert "sha256:" + hashlib.sha256(data).hexdigest() == blob
    if transport == "docker-archive":        # the config is the image's own (skopeo rewrites it for OCI forms)
        assert doc["config"]["digest"] == image.config.digest
    assert sorted(p.name for p in store.blobs.iterdir()) == sorted([digest[7:], *(b[7:] for b in named)])
    assert list(store.tmp.iterdir()) == []


def test_import_of_a_missing_archive_names_it(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"docker-archive:/nowhere/driver.tar: /nowhere/driver.tar does not exist"):
        import_image("docker-archive:/nowhere/driver.tar", BlobStore(tmp_path / "work"))


def test_a_docker_archive_driver_is_carried_end_to_end(tmp_path: Path, registry: RegistryServer,
                                                       driver_archive: tuple[Path, Image]) -> None:
    archive, _ = driver_archive
    plan = tmp_path / "plan.yaml"
    res = cli("plan", "--image", f"docker-archive:{archive}={DRIVER}", "--registry", f"{registry.host}/copy",
              "--resolve", "-o", str(plan))
    assert res.exit_code == 0, res.output
    [img] = yaml.safe_load(plan.read_text())["images"]
    assert img["source"] == DRIVER and img["local"] == f"docker-archive:{archive}"
    assert img["destination"] == f"{registry.host}/copy/nvidia/driver:550.127.05-5.15.0-131-generic-ubuntu22.04"

    out = tmp_path / "out" / "gpu.tar"
    res = cli("pull-bundle", str(plan), "-o", str(out), "--format", "json")
    assert res.exit_code == 0, res.output
    res = cli("push-bundle", str(out), "--insecure", registry.host, "--format", "json")
    assert res.exit_code == 0, res.output

    # an independent reader: skopeo reads it back from the destination registry
    lock = yaml.safe_load((tmp_path / "out" / "gpu.lock.yaml").read_text())
    digest = lock["images"][0]["digest"]
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{img['destination']}"],
                         check=True, capture_output=True).stdout
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == digest
    back = tmp_path / "back"
    subprocess.run(["skopeo", "--insecure-policy", "copy", "--src-tls-verify=false",
                    f"docker://{img['destination']}", f"dir:{back}"], check=True, capture_output=True)
    for layer in json.loads(raw)["layers"]:
        data = (back / layer["digest"][7:]).read_bytes()
        assert "sha256:" + hashlib.sha256(data).hexdigest() == layer["digest"]


def test_image_list_entries_may_be_local_and_their_paths_are_the_lists(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    listing = tmp_path / "site" / "images.txt"
    listing.write_text(f"# site images\nnvcr.io/nvidia/cuda:12.3.2-base-ubi8\ndocker-archive:driver.tar={DRIVER}\n")
    res = cli("plan", "--image-list", str(listing), "--registry", "registry.local/kse", "--format", "json")
    assert res.exit_code == 0, res.output
    images = {i["source"]: i for i in json.loads(res.stdout)["images"]}
    assert images[DRIVER]["local"] == f"docker-archive:{tmp_path}/site/driver.tar"
    assert images[DRIVER]["destination"] == "registry.local/kse/nvidia/driver:550.127.05-5.15.0-131-generic-ubuntu22.04"
    assert "local" not in images["nvcr.io/nvidia/cuda:12.3.2-base-ubi8"]      # registry images: plans as before
