"""``mirrorkit serve``: a real server process on loopback, pulled from by real clients.

One bundle (images, referrers, a cosign fallback tag, a Helm chart, apt files) is written
per module and served by one process; the tests that need other options (TLS with basic
auth, another prefix, a damaged bundle) start their own.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import shutil
import signal
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import httpx
import oras.client
import pytest
import yaml
from click.testing import CliRunner
from kit.bundles import SBOM_TYPE, SIGNATURE_TYPE, Built, chart_archive, make_bundle
from kit.containerd import Containerd
from kit.images import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, Image, Index, make_image, make_layer
from kit.registryd import RegistryServer
from kit.serveproc import ServeProcess, ServeStartError
from kit.tls import make_ca

from mirrorkit.cli.main import main


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    tmp = tmp_path_factory.mktemp("serve")
    return make_bundle(tmp / "work", tmp / "gpu.tar")


@pytest.fixture(scope="module")
def served(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    log = tmp_path_factory.mktemp("servelog") / "serve.log"
    server = ServeProcess([str(built.volumes[0])], log).start()
    yield server
    code, seconds = server.stop(signal.SIGTERM)
    assert code == 0 and seconds < 5, server.output()


def cli(*args: str) -> str:
    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.stdout


def repo_of(source: str, prefix: str = "kse") -> str:
    path = source.split("/", 1)[1].rsplit(":", 1)[0]
    return f"{prefix}/{path}" if prefix else path


def raw_get(host: str, path: str, method: str = "GET") -> tuple[int, bytes]:
    """A request whose path goes out exactly as written (httpx and curl would normalise ``..``)."""
    conn = http.client.HTTPConnection(host, timeout=10)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def error_code(response: httpx.Response) -> str:
    return str(response.json()["errors"][0]["code"])


OPERATOR = "nvcr.io/nvidia/gpu-operator:v23.9.2"
PLUGIN = "nvcr.io/nvidia/cloud-native/k8s-device-plugin:v0.14.5"
BUSYBOX = "docker.io/library/busybox:1.36"


# --------------------------------------------------------------------------- routes


def test_announces_url_and_next_command(served: ServeProcess, built: Built) -> None:
    out = served.output()
    assert "verified bundle serve-test: " in out
    assert (f"next: mirrorkit rewrite-config {built.volumes[0]} --registry {served.host}/kse --insecure "
            f"{served.host} --format containerd") in out
    with httpx.Client(base_url=served.url) as http:
        assert http.get("/healthz").text == "ok\n"
        v2 = http.get("/v2/")
        assert v2.status_code == 200 and v2.headers["Docker-Distribution-API-Version"] == "registry/2.0"


def test_catalog_and_tags_paginate(served: ServeProcess, built: Built) -> None:
    names = sorted([repo_of(s) for s in built.images] + ["kse/charts/gpu-operator"])
    with httpx.Client(base_url=served.url) as http:
        assert http.get("/v2/_catalog").json() == {"repositories": names}
        seen, url = [], "/v2/_catalog?n=3"
        while url:
            page = http.get(url)
            seen += page.json()["repositories"]
            link = page.headers.get("Link")
            url = link[1:link.index(">")] if link else ""
        assert seen == names
        assert http.get("/v2/_catalog", params={"n": 2, "last": names[1]}).json()["repositories"] == names[2:4]
        assert http.get("/v2/_catalog?n=0").json()["repositories"] == []
        assert error_code(http.get("/v2/_catalog?n=x")) == "PAGINATION_NUMBER_INVALID"
        tags = http.get(f"/v2/{repo_of(OPERATOR)}/tags/list").json()
        assert tags == {"name": repo_of(OPERATOR), "tags": sorted([built.fallback_tag[0], "v23.9.2"])}
        first = http.get(f"/v2/{repo_of(OPERATOR)}/tags/list?n=1")
        assert first.json()["tags"] == [built.fallback_tag[0]] and 'rel="next"' in first.headers["Link"]
        assert http.get(f"/v2/{repo_of(OPERATOR)}/tags/list?n=1&last={built.fallback_tag[0]}").json()["tags"] == \
            ["v23.9.2"]


def test_manifests_by_tag_and_digest_unchanged(served: ServeProcess, built: Built) -> None:
    with httpx.Client(base_url=served.url) as http:
        for source, content in built.images.items():
            stored = content.data if isinstance(content, Index) else content.manifest
            for reference in (source.rsplit(":", 1)[1], content.digest):
                url = f"/v2/{repo_of(source)}/manifests/{reference}"
                got = http.get(url)
                assert got.status_code == 200 and got.content == stored
                assert got.headers["Docker-Content-Digest"] == content.digest
                assert got.headers["Content-Type"] == content.media_type
                head = http.head(url)
                assert head.status_code == 200 and head.content == b""
                assert int(head.headers["Content-Length"]) == len(stored)
                assert head.headers["Docker-Content-Digest"] == content.digest
            if isinstance(content, Index):
                for child in content.images:
                    assert http.get(f"/v2/{repo_of(source)}/manifests/{child.digest}").content == child.manifest
        # Accept negotiation: an index only to a client that takes indexes; a manifest as stored
        url = f"/v2/{repo_of(OPERATOR)}/manifests/v23.9.2"
        refused = http.get(url, headers={"Accept": f"{OCI_MANIFEST}, {DOCKER_MANIFEST}"})
        assert refused.status_code == 404 and error_code(refused) == "MANIFEST_UNKNOWN"
        assert http.get(url, headers={"Accept": f"{OCI_MANIFEST};q=0.5, {OCI_INDEX}"}).status_code == 200
        assert http.get(f"/v2/{repo_of(BUSYBOX)}/manifests/1.36", headers={"Accept": DOCKER_MANIFEST}).content == \
            built.images[BUSYBOX].manifest   # type: ignore[union-attr]


def test_blobs_whole_and_ranges(served: ServeProcess, built: Built) -> None:
    image = built.images[BUSYBOX]
    assert isinstance(image, Image)
    layer = image.layers[0]
    url = f"/v2/{repo_of(BUSYBOX)}/blobs/{layer.digest}"
    with httpx.Client(base_url=served.url) as http:
        got = http.get(url)
        assert got.status_code == 200 and got.content == layer.data
        assert got.headers["Docker-Content-Digest"] == layer.digest and got.headers["Accept-Ranges"] == "bytes"
        head = http.head(url)
        assert head.status_code == 200 and int(head.headers["Content-Length"]) == layer.size and head.content == b""
        size = layer.size
        for header, first, last in (("bytes=0-99", 0, 99), ("bytes=100-", 100, size - 1),
                                    ("bytes=-10", size - 10, size - 1), (f"bytes=5-{size + 50}", 5, size - 1)):
            part = http.get(url, headers={"Range": header})
            assert part.status_code == 206, header
            assert part.content == layer.data[first:last + 1]
            assert part.headers["Content-Range"] == f"bytes {first}-{last}/{size}"
        for bad in (f"bytes={size}-", "bytes=10-5", "bytes=-0", "bytes=0-1,5-6", "items=0-1", "bytes=-", "bytes=x-"):
            refused = http.get(url, headers={"Range": bad})
            assert refused.status_code == 416, bad
            assert refused.headers["Content-Range"] == f"bytes */{size}"
        # the config and a manifest are blobs of their repository too
        assert http.get(f"/v2/{repo_of(BUSYBOX)}/blobs/{image.config.digest}").content == image.config.data
        assert http.get(f"/v2/{repo_of(BUSYBOX)}/blobs/{image.digest}").content == image.manifest


def test_referrers_and_fallback_tag(served: ServeProcess, built: Built) -> None:
    subject = built.images[OPERATOR].digest
    base = f"/v2/{repo_of(OPERATOR)}/referrers/{subject}"
    with httpx.Client(base_url=served.url) as http:
        listed = http.get(base)
        assert listed.status_code == 200 and listed.headers["Content-Type"] == OCI_INDEX
        body = listed.json()
        assert body["mediaType"] == OCI_INDEX and body["schemaVersion"] == 2
        assert sorted(d["digest"] for d in body["manifests"]) == sorted(built.referrers[subject])
        assert {d["artifactType"] for d in body["manifests"]} == {SIGNATURE_TYPE, SBOM_TYPE}
        for d in body["manifests"]:
            manifest = http.get(f"/v2/{repo_of(OPERATOR)}/manifests/{d['digest']}")
            assert hashlib.sha256(manifest.content).hexdigest() == d["digest"].removeprefix("sha256:")
            assert d["size"] == len(manifest.content) and d["annotations"] == {"org.example.kind": d["artifactType"]}
        filtered = http.get(base, params={"artifactType": SBOM_TYPE})
        assert filtered.headers["OCI-Filters-Applied"] == "artifactType"
        assert [d["artifactType"] for d in filtered.json()["manifests"]] == [SBOM_TYPE]
        other = built.images[BUSYBOX].digest
        assert http.get(f"/v2/{repo_of(BUSYBOX)}/referrers/{other}").json()["manifests"] == []
        tag, digest = built.fallback_tag
        fallback = http.get(f"/v2/{repo_of(OPERATOR)}/manifests/{tag}")
        assert fallback.status_code == 200 and fallback.headers["Docker-Content-Digest"] == digest


def test_not_found_codes(served: ServeProcess, built: Built) -> None:
    image = built.images[BUSYBOX]
    assert isinstance(image, Image)
    missing = "sha256:" + "0" * 64
    with httpx.Client(base_url=served.url) as http:
        for url, code in (("/v2/kse/nope/manifests/latest", "NAME_UNKNOWN"),
                          ("/v2/nvidia/gpu-operator/manifests/v23.9.2", "NAME_UNKNOWN"),   # without the prefix
                          ("/v2/kse/nope/tags/list", "NAME_UNKNOWN"),
                          (f"/v2/{repo_of(BUSYBOX)}/manifests/latest", "MANIFEST_UNKNOWN"),
                          (f"/v2/{repo_of(BUSYBOX)}/manifests/{missing}", "MANIFEST_UNKNOWN"),
                          (f"/v2/{repo_of(BUSYBOX)}/manifests/{built.images[OPERATOR].digest}", "MANIFEST_UNKNOWN"),
                          (f"/v2/{repo_of(BUSYBOX)}/blobs/{missing}", "BLOB_UNKNOWN"),
                          # a blob of another repository is not served from this one
                          (f"/v2/{repo_of(PLUGIN)}/blobs/{image.layers[1].digest}", "BLOB_UNKNOWN"),
                          ("/v2/kse/nope/blobs/" + missing, "NAME_UNKNOWN"),
                          ("/nothing", "NOT_FOUND")):
            got = http.get(url)
            assert (got.status_code, error_code(got)) == (404, code), url
        invalid = http.get(f"/v2/{repo_of(BUSYBOX)}/blobs/sha256:xyz")
        assert (invalid.status_code, error_code(invalid)) == (400, "DIGEST_INVALID")


def test_writes_refused(served: ServeProcess) -> None:
    with httpx.Client(base_url=served.url) as http:
        for method, url in (("POST", f"/v2/{repo_of(BUSYBOX)}/blobs/uploads/"),
                            ("PUT", f"/v2/{repo_of(BUSYBOX)}/manifests/1.36"),
                            ("PATCH", f"/v2/{repo_of(BUSYBOX)}/blobs/uploads/x"),
                            ("DELETE", f"/v2/{repo_of(BUSYBOX)}/manifests/1.36"),
                            ("PUT", "/packages/debian12/bookworm/dists/bookworm/InRelease")):
            got = http.request(method, url, content=b"x")
            assert got.status_code == 405 and error_code(got) == "UNSUPPORTED", (method, url)
            assert got.headers["Allow"] == "GET, HEAD"


@pytest.mark.parametrize("path", [
    "/v2/../v2/_catalog",
    "/v2/kse/../kse/library/busybox/tags/list",
    "/v2/kse/%2e%2e/kse/library/busybox/tags/list",
    "/v2/kse/%2E%2E/kse/library/busybox/tags/list",
    "/v2/kse%2flibrary%2fbusybox/tags/list",
    "/v2/kse%2Flibrary/busybox/tags/list",
    "/v2/kse/library%5cbusybox/tags/list",
    "/v2/kse//library/busybox/tags/list",
    "/v2/kse/./library/busybox/tags/list",
    "/packages/debian12/bookworm/../bookworm/dists/bookworm/InRelease",
    "/packages/debian12/bookworm/%2e%2e/%2e%2e/etc/passwd",
    "/packages/debian12/bookworm/dists%2fbookworm%2fInRelease",
    "/packages/debian12/bookworm/.%2e/bookworm/dists/bookworm/InRelease",
    "/packages/debian12/bookworm/dists/bookworm/InRelease%00",
])
def test_traversal_refused(served: ServeProcess, path: str) -> None:
    status, body = raw_get(served.host, path)
    assert status == 400, (path, body)
    assert json.loads(body)["errors"][0]["code"] == "NAME_INVALID"


def test_packages_served_as_static_files(served: ServeProcess, built: Built) -> None:
    with httpx.Client(base_url=served.url) as http:
        for key, data in built.packages.items():
            got = http.get("/packages/" + key)
            assert got.status_code == 200 and got.content == data, key
        deb = "/packages/debian12/bookworm/pool/main/g/gcc-12/libstdc%2b%2b6_12.2.0-14_amd64.deb"  # as apt asks
        got = http.get(deb)
        assert got.content == built.packages["debian12/bookworm/pool/main/g/gcc-12/libstdc++6_12.2.0-14_amd64.deb"]
        assert got.headers["Content-Type"] == "application/vnd.debian.binary-package"
        head = http.head("/packages/debian12/bookworm/dists/bookworm/InRelease")
        assert head.status_code == 200 and head.content == b""
        part = http.get("/packages/debian12/bookworm/dists/bookworm/InRelease", headers={"Range": "bytes=0-4"})
        assert part.status_code == 206 and part.content == b"-----"
        for missing in ("/packages/debian12/bookworm/dists/bookworm/Release", "/packages/debian12/bookworm",
                        "/packages/debian12/other/dists/bookworm/InRelease"):
            assert http.get(missing).status_code == 404, missing


# --------------------------------------------------------------------------- real clients


def test_skopeo_copy_all_byte_identical(served: ServeProcess, built: Built, tmp_path: Path) -> None:
    for n, (source, content) in enumerate(built.images.items()):
        out = tmp_path / f"dir{n}"
        res = subprocess.run(["skopeo", "copy", "--all", "--preserve-digests", "--src-tls-verify=false",
                              f"docker://{served.host}/{repo_of(source)}:{source.rsplit(':', 1)[1]}", f"dir:{out}"],
                             capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert res.returncode == 0, res.stderr
        stored = content.data if isinstance(content, Index) else content.manifest
        assert (out / "manifest.json").read_bytes() == stored
        for blob in content.blobs():
            assert (out / blob.digest.removeprefix("sha256:")).read_bytes() == blob.data


def test_containerd_pulls_through_rewrite_config_hosts(served: ServeProcess, built: Built, tmp_path: Path) -> None:
    certs = tmp_path / "certs.d"
    CliRunner().invoke(main, ["rewrite-config", str(built.volumes[0]), "--registry", f"{served.host}/kse",
                              "--insecure", served.host, "--format", "containerd", "-o", str(certs)],
                       catch_exceptions=False)
    assert (certs / "nvcr.io" / "hosts.toml").is_file()
    with Containerd() as containerd:
        for name, content in built.images.items():
            containerd.pull(name, hosts_dir=certs, platform="linux/amd64", timeout=60)
            assert containerd.image_digest(name) == content.digest


def test_podman_pulls_through_registries_conf(served: ServeProcess, built: Built, tmp_path: Path) -> None:
    conf = tmp_path / "registries.conf"
    cli("rewrite-config", str(built.volumes[0]), "--registry", f"{served.host}/kse", "--insecure", served.host,
        "--format", "registries-conf", "-o", str(conf))
    run = Path(tempfile.mkdtemp(prefix="mkpod", dir="/tmp"))
    podman = ["podman", "--storage-driver", "vfs", "--root", str(tmp_path / "root"), "--runroot", str(run),
              "--cgroup-manager", "cgroupfs", "--events-backend", "none"]
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(tmp_path), "CONTAINERS_REGISTRIES_CONF": str(conf)}
    try:
        for name in (OPERATOR, BUSYBOX):
            res = subprocess.run([*podman, "pull", "--arch", "amd64", name], capture_output=True, text=True,
                                 timeout=60, env=env, stdin=subprocess.DEVNULL)
            assert res.returncode == 0, res.stderr
            info = json.loads(subprocess.run([*podman, "image", "inspect", name], capture_output=True, text=True,
                                             timeout=30, env=env, check=True).stdout)[0]
            assert any(d.endswith("@" + built.images[name].digest) for d in info["RepoDigests"])
    finally:
        subprocess.run([*podman, "system", "reset", "--force"], capture_output=True, timeout=60, env=env)
        shutil.rmtree(run, ignore_errors=True)


def test_oras_pulls_the_chart(served: ServeProcess, built: Built, tmp_path: Path) -> None:
    assert built.chart is not None
    client = oras.client.OrasClient(hostname=served.host, insecure=True)
    files = client.pull(target=f"{served.host}/kse/charts/gpu-operator:v23.9.2", outdir=str(tmp_path))
    assert [Path(f).name for f in files] == ["gpu-operator-v23.9.2.tgz"]
    assert Path(files[0]).read_bytes() == chart_archive()


def test_sixteen_clients_at_once(served: ServeProcess, built: Built) -> None:
    """16 threads each pull every image (all platforms, every blob) at once; every byte checks out."""
    failures: list[str] = []

    def pull() -> None:
        try:
            with httpx.Client(base_url=served.url, timeout=30) as http:
                for source, content in built.images.items():
                    repo = repo_of(source)
                    for manifest in [content] + (list(content.images) if isinstance(content, Index) else []):
                        got = http.get(f"/v2/{repo}/manifests/{manifest.digest}", headers={"Accept": "*/*"})
                        assert "sha256:" + hashlib.sha256(got.content).hexdigest() == manifest.digest
                    for blob in content.blobs():
                        data = http.get(f"/v2/{repo}/blobs/{blob.digest}").content
                        assert "sha256:" + hashlib.sha256(data).hexdigest() == blob.digest
        except Exception as exc:  # noqa: BLE001 - collected and reported by the test
            failures.append(repr(exc))

    threads = [threading.Thread(target=pull) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert failures == [] and not any(t.is_alive() for t in threads)


# --------------------------------------------------------------------------- other ways to serve


def test_mirror_from_the_server_into_a_registry(built: Built, tmp_path: Path) -> None:
    """Bootstrap now, move into Harbor later: an unpacked bundle served at the upstream paths (--prefix /)
    is the source of `mirrorkit mirror`, reached with --source-endpoint."""
    folder = tmp_path / "unpacked"
    folder.mkdir()
    with tarfile.open(built.volumes[0]) as tar:
        tar.extractall(folder, filter="data")
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump(yaml.safe_load((folder / "bundle.yaml").read_text())["plan"], sort_keys=False))
    with ServeProcess([str(folder), "--prefix", "/"], tmp_path / "serve.log") as source, \
            RegistryServer() as private:
        report = json.loads(cli("mirror", str(plan), "--registry", f"{private.host}/harbor", "--insecure",
                                private.host, "--insecure", source.host, "--source-endpoint",
                                f"nvcr.io=http://{source.host}", "--source-endpoint",
                                f"docker.io=http://{source.host}", "--no-signatures", "--format", "json"))
        assert report["problems"] == [], report
        for name, content in built.images.items():
            got = httpx.get(f"{private.url}/v2/harbor/{repo_of(name, '')}/manifests/{name.rsplit(':', 1)[1]}",
                            headers={"Accept": content.media_type})
            assert got.headers["Docker-Content-Digest"] == content.digest
        assert '"GET /v2/nvidia/gpu-operator/manifests/' in source.output()


def test_tls_basic_auth_split_volumes_json_log(built: Built, tmp_path: Path) -> None:
    """A split bundle (any one volume names them all), checked against its .sha256 files only,
    behind TLS and basic auth, logging JSON; SIGINT stops it too."""
    split = make_bundle(tmp_path / "work", tmp_path / "split.tar", split=40_000, bundle_id="split-test")
    assert len(split.volumes) > 2
    ca = make_ca(tmp_path / "pki")
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("robot:" + bcrypt.hashpw(b"s3cret-pass", bcrypt.gensalt(rounds=4)).decode() + "\n")
    args = [str(split.volumes[1]), "--tls-cert", str(ca.cert), "--tls-key", str(ca.key), "--htpasswd", str(htpasswd),
            "--log-format", "json", "--trust-checksums"]
    server = ServeProcess(args, tmp_path / "serve.log").start()
    try:
        assert server.url.startswith("https://") and "volumes match their .sha256 files" in server.output()
        image = split.images[BUSYBOX]
        assert isinstance(image, Image)
        url = f"/v2/{repo_of(BUSYBOX)}/blobs/{image.layers[0].digest}"
        with httpx.Client(base_url=server.url, verify=ca.client_context()) as http:
            assert http.get("/healthz").status_code == 200
            for auth in (None, ("robot", "wrong"), ("nobody", "s3cret-pass")):
                denied = http.get(url, auth=auth)
                assert denied.status_code == 401 and error_code(denied) == "UNAUTHORIZED"
                assert denied.headers["WWW-Authenticate"] == 'Basic realm="mirrorkit"'
            for _ in range(2):
                got = http.get(url, auth=("robot", "s3cret-pass"))
                assert got.status_code == 200 and got.content == image.layers[0].data
            part = http.get(url, auth=("robot", "s3cret-pass"), headers={"Range": "bytes=10-19"})
            assert part.status_code == 206 and part.content == image.layers[0].data[10:20]
        auth_file = tmp_path / "auth.json"
        token = base64.b64encode(b"robot:s3cret-pass").decode()
        auth_file.write_text(json.dumps({"auths": {server.host: {"auth": token}}}))
        certs = tmp_path / "certs"
        certs.mkdir()
        shutil.copy(ca.ca_cert, certs / "ca.crt")
        res = subprocess.run(["skopeo", "copy", "--all", "--src-cert-dir", str(certs), "--src-authfile",
                              str(auth_file), f"docker://{server.host}/{repo_of(OPERATOR)}:v23.9.2",
                              f"dir:{tmp_path / 'out'}"], capture_output=True, text=True, timeout=60,
                             stdin=subprocess.DEVNULL)
        assert res.returncode == 0, res.stderr
        assert (tmp_path / "out" / "manifest.json").read_bytes() == split.images[OPERATOR].data  # type: ignore[union-attr]
    finally:
        code, seconds = server.stop(signal.SIGINT)
    assert code == 0 and seconds < 5
    lines = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
    assert {"time", "remote", "user", "method", "path", "status", "bytes", "seconds"} <= set(lines[0])
    assert any(x["user"] == "robot" and x["status"] == 200 and x["bytes"] == image.layers[0].size for x in lines)
    assert "s3cret" not in server.output() and token not in server.output()


def test_damaged_bundle_is_not_served(built: Built, tmp_path: Path) -> None:
    bad = tmp_path / "bad.tar"
    shutil.copy(built.volumes[0], bad)
    data = bytearray(bad.read_bytes())
    image = built.images[BUSYBOX]
    assert isinstance(image, Image)
    at = bytes(data).index(image.layers[0].data[:4096]) + 2048
    data[at] ^= 0xFF
    bad.write_bytes(bytes(data))
    for extra in ([], ["--trust-checksums"]):   # the old .sha256 no longer matches either
        (tmp_path / "bad.tar.sha256").write_text(
            f"{hashlib.sha256(built.volumes[0].read_bytes()).hexdigest()}  bad.tar\n")
        with pytest.raises(ServeStartError) as failed:
            ServeProcess([str(bad), *extra], tmp_path / f"serve{len(extra)}.log").start()
        text = str(failed.value)
        assert "exit 1" in text and "not served" in text and "Traceback" not in text


def test_compressed_bundle_is_refused_in_one_line(tmp_path: Path) -> None:
    packed = make_bundle(tmp_path / "work", tmp_path / "gpu.tar.zst", compress="zstd", extras=False)
    res = CliRunner().invoke(main, ["serve", str(packed.volumes[0]), "--addr", "127.0.0.1:0"])
    assert res.exit_code == 1 and "not served: compressed (zstd) volumes" in res.output
    assert len(res.output.strip().splitlines()) == 1 and "Traceback" not in res.output


def test_print_systemd_unit(built: Built, tmp_path: Path) -> None:
    unit = cli("serve", str(built.volumes[0]), "--addr", "0.0.0.0:5000", "--prefix", "mirror",
               "--print-systemd-unit")
    exec_line = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert f" serve {built.volumes[0].resolve()} --addr 0.0.0.0:5000 --prefix mirror" in exec_line
    assert "[Install]" in unit and "KillSignal=SIGTERM" in unit


def test_bad_options_are_usage_errors(built: Built, tmp_path: Path) -> None:
    for args, message in (([str(built.volumes[0]), "--addr", "nowhere"], "--addr"),
                          ([str(built.volumes[0]), "--prefix", "UPPER/Case"], "--prefix"),
                          ([str(built.volumes[0]), "--tls-cert", str(built.volumes[0])], "go together")):
        res = CliRunner().invoke(main, ["serve", *args])
        assert res.exit_code == 2 and message in res.output, res.output
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("# users\nrobot:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n")
    res = CliRunner().invoke(main, ["serve", str(built.volumes[0]), "--htpasswd", str(htpasswd)])
    assert res.exit_code == 2 and f"{htpasswd}:2: user 'robot' has no bcrypt hash" in res.output
    folder = tmp_path / "unpacked"
    folder.mkdir()
    with tarfile.open(built.volumes[0]) as tar:
        tar.extractall(folder, filter="data")
    res = CliRunner().invoke(main, ["serve", str(folder), "--trust-checksums"])
    assert res.exit_code == 1 and "not served" in res.output and "has no .sha256 file" in res.output


def test_sigterm_stops_within_five_seconds_with_a_download_in_flight(tmp_path: Path) -> None:
    """A client that stopped reading half-way through a 24 MiB layer (more than loopback buffers hold) does not
    keep the server up."""
    image = make_image("sv/stall", [make_layer("sv/stall", 24 << 20, compress=False)])
    bundle = make_bundle(tmp_path / "work", tmp_path / "stall.tar", images={BUSYBOX: image}, extras=False)
    server = ServeProcess([str(bundle.volumes[0])], tmp_path / "serve.log").start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http, \
                http.stream("GET", f"/v2/{repo_of(BUSYBOX)}/blobs/{image.layers[0].digest}") as response:
            assert response.status_code == 200
            next(response.iter_raw(65536))          # then stop reading: the server's sendfile blocks
            code, seconds = server.stop(signal.SIGTERM)
    finally:
        server.stop()
    assert code == 0 and seconds < 5, (code, seconds, server.output())
    assert "stopped" in server.output()


def signed_apt_repo(tmp: Path) -> tuple[dict[str, bytes], Path]:
    """A one-package apt repository, signed with a throw-away key: files by path, and the public keyring."""
    pkg = tmp / "pkg"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "usr/share/probe").mkdir(parents=True)
    (pkg / "usr/share/probe/hello").write_text("served from the bundle\n")
    (pkg / "DEBIAN/control").write_text("Package: mirrorkit-probe\nVersion: 1.0+air\nArchitecture: amd64\n"
                                        "Maintainer: test <t@example.com>\nDescription: probe\n")
    subprocess.run(["dpkg-deb", "--build", "-Zgzip", str(pkg), str(tmp / "probe.deb")], check=True,
                   capture_output=True)
    deb = (tmp / "probe.deb").read_bytes()
    pool = "pool/main/m/mirrorkit-probe/mirrorkit-probe_1.0+air_amd64.deb"
    packages = (f"Package: mirrorkit-probe\nVersion: 1.0+air\nArchitecture: amd64\nMaintainer: test <t@example.com>\n"
                f"Filename: {pool}\nSize: {len(deb)}\nSHA256: {hashlib.sha256(deb).hexdigest()}\n"
                "Description: probe\n\n").encode()
    date = subprocess.run(["date", "-uR"], capture_output=True, text=True, check=True).stdout.strip()
    release = (f"Origin: mirrorkit-test\nSuite: bookworm\nCodename: bookworm\nDate: {date}\nArchitectures: amd64\n"
               f"Components: main\nSHA256:\n {hashlib.sha256(packages).hexdigest()} {len(packages)} "
               "main/binary-amd64/Packages\n").encode()
    home = tmp / "gnupg"
    home.mkdir(mode=0o700)
    gpg = ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback", "--passphrase", ""]
    subprocess.run([*gpg, "--quick-gen-key", "mirrorkit test <t@example.com>", "ed25519", "sign", "never"],
                   check=True, capture_output=True)
    (tmp / "Release").write_bytes(release)
    subprocess.run([*gpg, "--clearsign", "-o", str(tmp / "InRelease"), str(tmp / "Release")], check=True,
                   capture_output=True)
    keyring = tmp / "archive-key.gpg"
    keyring.write_bytes(subprocess.run([*gpg, "--export"], check=True, capture_output=True).stdout)
    return {"dists/bookworm/InRelease": (tmp / "InRelease").read_bytes(), "dists/bookworm/Release": release,
            "dists/bookworm/main/binary-amd64/Packages": packages, pool: deb}, keyring


def test_apt_get_fetches_packages_from_the_server(tmp_path: Path) -> None:
    """Real apt-get (its own root, the repository's own signature checked) updates and downloads through
    /packages/<os>/<name>/: the InRelease, the Packages index, and a .deb whose name apt percent-encodes."""
    files, keyring = signed_apt_repo(tmp_path / "repo")
    bundle = make_bundle(tmp_path / "work", tmp_path / "apt.tar", images={BUSYBOX: make_image(
        "sv/apt", [make_layer("sv/apt", 1024)])}, apt=files)
    root = tmp_path / "root"
    for folder in ("etc/apt/sources.list.d", "etc/apt/preferences.d", "var/lib/apt/lists/partial",
                   "var/cache/apt/archives/partial", "var/lib/dpkg"):
        (root / folder).mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text("")
    apt = ["apt-get", "-q", "-o", f"Dir={root}", "-o", f"Dir::State::status={root}/var/lib/dpkg/status",
           "-o", "APT::Architecture=amd64", "-o", "APT::Architectures=amd64", "-o", "Acquire::Languages=none",
           "-o", "APT::Sandbox::User=root", "-o", "Debug::NoLocking=1", "-o", "Acquire::Retries=0"]
    with ServeProcess([str(bundle.volumes[0])], tmp_path / "serve.log") as server:
        (root / "etc/apt/sources.list").write_text(
            f"deb [signed-by={keyring}] {server.url}/packages/debian12/bookworm bookworm main\n")
        update = subprocess.run([*apt, "update"], capture_output=True, text=True, timeout=60,
                                stdin=subprocess.DEVNULL)
        assert update.returncode == 0 and "W:" not in update.stdout + update.stderr, update.stdout + update.stderr
        download = subprocess.run([*apt, "download", "mirrorkit-probe"], capture_output=True, text=True, timeout=60,
                                  cwd=tmp_path, stdin=subprocess.DEVNULL)
        assert download.returncode == 0, download.stdout + download.stderr
        log = server.output()
    got = next(tmp_path.glob("mirrorkit-probe_1.0*_amd64.deb"))
    assert got.read_bytes() == files["pool/main/m/mirrorkit-probe/mirrorkit-probe_1.0+air_amd64.deb"]
    assert "/packages/debian12/bookworm/dists/bookworm/InRelease HTTP/1.1\" 200" in log
    assert "/pool/main/m/mirrorkit-probe/mirrorkit-probe_1.0%2bair_amd64.deb HTTP/1.1\" 200" in log
