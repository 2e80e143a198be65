"""Helm charts in the bundle: pull-bundle --chart, push-bundle as a Helm OCI artifact, read back with oras-py.

Real registries on loopback (an "upstream" playing nvcr.io and a "private" one),
real skopeo for the images; the chart is built here, in memory, deterministically.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import httpx
import oras.client
import pytest
import yaml
from click.testing import CliRunner, Result
from kit.images import Image, Index, make_image, make_index, make_layer
from kit.push import push_image
from kit.registryd import RegistryServer

from mirrorkit.cli.main import main
from mirrorkit.errors import InputError
from mirrorkit.transfer import charts

PREFIX = "kse"
CHART_YAML = """apiVersion: v2
name: gpu-operator
version: v23.9.2
appVersion: v23.9.2
description: NVIDIA GPU Operator
kubeVersion: ">= 1.16.0-0"
home: https://github.com/NVIDIA/gpu-operator
sources:
  - https://github.com/NVIDIA/gpu-operator
"""
VALUES = "operator:\n  repository: nvcr.io/nvidia\n  image: gpu-operator\n  version: v23.9.2\n"
TEMPLATE = ("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}\n"
            "spec:\n  template:\n    spec:\n      containers:\n        - image: "
            "{{ .Values.operator.repository }}/{{ .Values.operator.image }}:{{ .Values.operator.version }}\n")


def tgz(members: list[tuple[str, bytes | None, bytes]]) -> bytes:
    """A gzip'd tar, byte-for-byte reproducible: (name, type or None for a file, content / link target)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            info.mtime, info.mode = 0, 0o644
            if kind is None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                info.type, info.linkname = kind, data.decode()
                tar.addfile(info)
    return gzip.compress(raw.getvalue(), mtime=0)


def chart_bytes(chart_yaml: str = CHART_YAML, top: str = "gpu-operator") -> bytes:
    return tgz([(f"{top}/Chart.yaml", None, chart_yaml.encode()), (f"{top}/values.yaml", None, VALUES.encode()),
                (f"{top}/templates/operator.yaml", None, TEMPLATE.encode())])


def images() -> dict[str, Image | Index]:
    base = {a: make_layer(f"ubi8/{a}", 16 << 10) for a in ("amd64", "arm64")}
    return {
        "nvidia/gpu-operator:v23.9.2": make_index([
            make_image(f"op/{a}", [base[a], make_layer(f"op/{a}", 8 << 10)], ("linux", a)) for a in base]),
        "nvidia/cloud-native/k8s-driver-manager:v0.6.5": make_image(
            "driver-manager", [base["amd64"], make_layer("driver-manager", 4 << 10)]),
    }


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def setup(tmp_path: Path, registry_factory) -> tuple[RegistryServer, RegistryServer, Path, Path]:
    upstream, private = registry_factory(), registry_factory()
    for name, content in images().items():
        repo, tag = name.split(":")
        push_image(upstream.url, repo, tag, content)
    plan = tmp_path / "plan.yaml"
    args = ["plan", "--registry", f"{private.host}/{PREFIX}", "--resolve",
            "--source-endpoint", f"nvcr.io=http://{upstream.host}", "-o", str(plan)]
    for ref in images():
        args += ["--image", f"nvcr.io/{ref}"]
    res = cli(*args)
    assert res.exit_code == 0, res.output
    chart = tmp_path / "gpu-operator-v23.9.2.tgz"
    chart.write_bytes(chart_bytes())
    return upstream, private, plan, chart


def pull(upstream: RegistryServer, plan: Path, out: Path, *extra: str) -> dict:
    res = cli("pull-bundle", str(plan), "-o", str(out), "--source-endpoint", f"nvcr.io=http://{upstream.host}",
              "--format", "json", *extra)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def push(private: RegistryServer, bundle: Path, *extra: str) -> dict:
    res = cli("push-bundle", str(bundle), "--insecure", private.host, "--format", "json", *extra)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def catalog(reg: RegistryServer) -> list[str]:
    return httpx.get(f"{reg.url}/v2/_catalog").json()["repositories"] or []


def lock_of(bundle: Path) -> dict:
    return yaml.safe_load(bundle.with_name(bundle.name.removesuffix(".tar") + ".lock.yaml").read_text())


def test_chart_travels_and_comes_back_identical(tmp_path: Path, setup) -> None:
    upstream, private, plan, chart = setup
    bundle = tmp_path / "gpu.tar"
    rep = pull(upstream, plan, bundle, "--chart", str(chart))
    assert rep["images"] == 2 and rep["charts"] == 1
    lock = lock_of(bundle)
    [entry] = lock["charts"]
    built = charts.load_chart(chart)
    assert entry["name"] == "gpu-operator" and entry["version"] == "v23.9.2" and entry["tag"] == "v23.9.2"
    assert entry["app_version"] == "v23.9.2"
    assert entry["digest"] == built.digest and entry["blobs"] == [built.config_digest, built.layer_digest]
    assert entry["repository"] == f"{private.host}/{PREFIX}/charts/gpu-operator"
    carried = {b["digest"]: b["size"] for b in lock["blobs"]}
    assert carried[built.layer_digest] == chart.stat().st_size and built.digest in carried
    with tarfile.open(bundle) as tar:
        assert f"blobs/sha256/{built.layer_digest[7:]}" in tar.getnames()
        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
    assert any(m["digest"] == built.digest for m in index["manifests"])

    out = push(private, bundle)
    assert out["images_pushed"] == 2 and out["charts_pushed"] == 1 and out["problems"] == []

    repo = f"{PREFIX}/charts/gpu-operator"
    r = httpx.get(f"{private.url}/v2/{repo}/manifests/v23.9.2",
                  headers={"Accept": charts.MANIFEST_MEDIA_TYPE})
    r.raise_for_status()
    assert r.headers["content-type"] == charts.MANIFEST_MEDIA_TYPE
    assert r.headers["docker-content-digest"] == built.digest
    manifest = r.json()
    assert manifest["config"]["mediaType"] == "application/vnd.cncf.helm.config.v1+json"
    assert [layer["mediaType"] for layer in manifest["layers"]] == [
        "application/vnd.cncf.helm.chart.content.v1.tar+gzip"]
    config = httpx.get(f"{private.url}/v2/{repo}/blobs/{manifest['config']['digest']}").json()
    assert config["name"] == "gpu-operator" and config["version"] == "v23.9.2"
    assert config["appVersion"] == "v23.9.2" and config["apiVersion"] == "v2"
    assert config["description"] == "NVIDIA GPU Operator"

    # read back the way an OCI artifact client does: oras-py
    client = oras.client.OrasClient(hostname=private.host, insecure=True)
    got = client.get_manifest(f"{private.host}/{repo}:v23.9.2")
    assert got["config"]["mediaType"] == charts.CONFIG_MEDIA_TYPE
    files = client.pull(target=f"{private.host}/{repo}:v23.9.2", outdir=str(tmp_path / "pulled"))
    assert [Path(f).name for f in files] == ["gpu-operator-v23.9.2.tgz"]
    assert Path(files[0]).read_bytes() == chart.read_bytes()

    # verify checks the chart beside the images
    res = cli("verify", str(bundle), "--insecure", private.host)
    assert res.exit_code == 0 and "3 of 3 images and charts present" in res.stderr, res.output

    # reruns: nothing to do on either side
    again = push(private, bundle)
    assert again["charts_pushed"] == 0 and again["charts_skipped"] == 1 and again["bytes_uploaded"] == 0
    res = cli("push-bundle", str(bundle), "--insecure", private.host)
    assert res.exit_code == 0 and "0 Helm charts (1 already there)" in res.stderr, res.output
    assert pull(upstream, plan, bundle, "--chart", str(chart))["up_to_date"] is True
    # a bundle without the chart is not "up to date" with one that has it
    assert pull(upstream, plan, bundle)["up_to_date"] is False
    assert lock_of(bundle)["charts"] == []


def test_push_to_another_registry_places_the_chart_under_its_prefix(tmp_path: Path, setup, registry_factory) -> None:
    upstream, _, plan, chart = setup
    bundle = tmp_path / "gpu.tar"
    pull(upstream, plan, bundle, "--chart", str(chart))
    other = registry_factory()
    out = push(other, bundle, "--registry", f"{other.host}/site/gpu")
    assert out["charts_pushed"] == 1 and out["problems"] == []
    assert "site/gpu/charts/gpu-operator" in catalog(other)


def test_corrupted_chart_blob_is_refused_before_anything_is_pushed(tmp_path: Path, setup) -> None:
    upstream, private, plan, chart = setup
    bundle = tmp_path / "gpu.tar"
    pull(upstream, plan, bundle, "--chart", str(chart))
    layer = charts.load_chart(chart).layer_digest
    with tarfile.open(bundle) as tar:
        member = tar.getmember(f"blobs/sha256/{layer[7:]}")
    data = bytearray(bundle.read_bytes())
    data[member.offset_data + 20] ^= 0xFF
    bundle.write_bytes(bytes(data))
    # a .sha256 made for the altered volume (push-bundle refuses a volume without one), so the blob's own
    # hash is what catches it
    bundle.with_name("gpu.tar.sha256").write_text(f"{hashlib.sha256(bytes(data)).hexdigest()}  gpu.tar\n")
    res = cli("push-bundle", str(bundle), "--insecure", private.host)
    assert res.exit_code == 2, res.output
    assert layer in res.stderr and "corrupt" in res.stderr
    assert catalog(private) == []


def test_bad_chart_files_are_refused_with_one_line(tmp_path: Path, setup) -> None:
    upstream, _, plan, _ = setup
    good = CHART_YAML.encode()
    bad = {
        "notgz.tgz": (b"apiVersion: v2\nname: x\n", "gzip-compressed tar"),
        "gzip-not-tar.tgz": (gzip.compress(b"hello world" * 100, mtime=0), "corrupt .tgz"),
        "nochart.tgz": (tgz([("gpu-operator/values.yaml", None, b"a: 1\n")]), "no Chart.yaml"),
        "traversal.tgz": (tgz([("gpu-operator/Chart.yaml", None, good), ("../evil.yaml", None, b"x")]),
                          "outside the chart directory"),
        "absolute.tgz": (tgz([("/etc/passwd", None, b"x"), ("gpu-operator/Chart.yaml", None, good)]),
                         "outside the chart directory"),
        "symlink.tgz": (tgz([("gpu-operator/Chart.yaml", None, good),
                             ("gpu-operator/link", tarfile.SYMTYPE, b"/etc/passwd")]), "links are not allowed"),
        "twotops.tgz": (tgz([("gpu-operator/Chart.yaml", None, good), ("other/values.yaml", None, b"")]),
                        "outside the chart's directory"),
        "badversion.tgz": (chart_bytes(CHART_YAML.replace("version: v23.9.2\napp", "version: latest\napp")),
                           "not a SemVer version"),
        "upper.tgz": (chart_bytes(CHART_YAML.replace("name: gpu-operator", "name: GPU-Operator")),
                      "OCI repository name"),
    }
    for name, (content, message) in bad.items():
        path = tmp_path / name
        path.write_bytes(content)
        out = tmp_path / f"{name}.tar"
        res = cli("pull-bundle", str(plan), "-o", str(out), "--source-endpoint", f"nvcr.io=http://{upstream.host}",
                  "--chart", str(path))
        assert res.exit_code == 2, (name, res.output)
        assert res.stderr.count("\n") == 1 and res.stderr.startswith("error: "), (name, res.stderr)
        assert str(path) in res.stderr and message in res.stderr, (name, res.stderr)
        assert not out.exists()
    res = cli("pull-bundle", str(plan), "-o", str(tmp_path / "m.tar"), "--chart", str(tmp_path / "missing.tgz"))
    assert res.exit_code == 2 and "missing.tgz: chart not found" in res.stderr


# ---------------------------------------------------------------------------- charts.py alone


def test_manifest_is_deterministic() -> None:
    a, b = charts.build_chart(chart_bytes(), "a.tgz"), charts.build_chart(chart_bytes(), "b.tgz")
    assert a.manifest == b.manifest and a.digest == b.digest and a.config == b.config
    doc = json.loads(a.manifest)
    assert doc["mediaType"] == charts.MANIFEST_MEDIA_TYPE
    assert doc["config"] == {"mediaType": charts.CONFIG_MEDIA_TYPE, "digest": a.config_digest, "size": len(a.config)}
    assert doc["layers"][0]["digest"] == a.layer_digest and doc["layers"][0]["size"] == len(chart_bytes())
    assert "org.opencontainers.image.created" not in doc["annotations"]
    assert list(json.loads(a.config))[:3] == ["name", "home", "sources"]  # Helm's metadata order
    other = charts.build_chart(chart_bytes(CHART_YAML.replace("v23.9.2", "v23.9.1")), "c.tgz")
    assert other.digest != a.digest


def test_plus_in_version_becomes_underscore_in_tag() -> None:
    chart = charts.build_chart(chart_bytes(CHART_YAML.replace("version: v23.9.2\napp", "version: 1.2.3+build.5\napp")),
                               "c.tgz")
    assert chart.version == "1.2.3+build.5" and chart.tag == "1.2.3_build.5"
    [entry] = charts.lock_entries([chart], "registry.local:5000/kse")
    assert entry["tag"] == "1.2.3_build.5" and entry["repository"] == "registry.local:5000/kse/charts/gpu-operator"
    assert charts.oci_tag("v1.0.0") == "v1.0.0"


def test_numeric_app_version_and_missing_api_version() -> None:
    chart = charts.build_chart(chart_bytes(CHART_YAML.replace("appVersion: v23.9.2", "appVersion: 2")), "c.tgz")
    assert json.loads(chart.config)["appVersion"] == "2"
    with pytest.raises(InputError, match="apiVersion"):
        charts.build_chart(chart_bytes(CHART_YAML.replace("apiVersion: v2\n", "")), "c.tgz")
