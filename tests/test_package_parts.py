"""The parts under the package families: image files from layers, plain HTTP files, sources files."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import json
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mirrorkit.errors import InputError, NotFoundError, OperationError
from mirrorkit.oci.httpfile import HttpFiles, redact
from mirrorkit.oci.retry import RetryPolicy
from mirrorkit.packages.apt import nearest_kernels, repo_name
from mirrorkit.packages.apt.sources import parse_sources
from mirrorkit.packages.carry import PackageSource, match_source
from mirrorkit.packages.imagefs import read_paths


def tar_layer(entries: list[tuple[str, bytes | None]]) -> bytes:
    """A gzip layer; ``None`` content: a folder."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue())


def image(layers: list[bytes]) -> tuple[bytes, dict[str, bytes]]:
    blobs = {"sha256:" + hashlib.sha256(layer).hexdigest(): layer for layer in layers}
    manifest = json.dumps({"schemaVersion": 2, "layers": [{"digest": d} for d in blobs]}).encode()
    return manifest, blobs


def test_image_files_as_an_overlay_shows_them() -> None:
    manifest, blobs = image([
        tar_layer([("etc/yum.repos.d/a.repo", b"a1"), ("./etc/yum.repos.d/b.repo", b"b"),
                   ("etc/apt/sources.list.d/old.list", b"old"), ("var/lib/dpkg/status", b"s1"),
                   ("etc/yum.repos.d/c.repo", b"c")]),
        tar_layer([("etc/yum.repos.d/.wh.b.repo", b""), ("etc/yum.repos.d/a.repo", b"a2"),
                   ("etc/apt/sources.list.d/.wh..wh..opq", b""), ("/var/lib/dpkg/status", b"s2"),
                   ("../../etc/yum.repos.d/evil.repo", b"x"), ("etc/yum.repos.d/../../escape.repo", b"x"),
                   ("etc/yum.repos.d/c.repo", None)]),
    ])
    files = read_paths(manifest, lambda d: io.BytesIO(blobs[d]),
                       ["etc/yum.repos.d/*.repo", "etc/apt/sources.list.d/*", "var/lib/dpkg/status"])
    assert files == {"etc/yum.repos.d/a.repo": b"a2", "var/lib/dpkg/status": b"s2"}


def test_index_picks_the_node_arch_and_garbage_is_refused() -> None:
    manifest, blobs = image([tar_layer([("var/lib/dpkg/status", b"arm")])])
    child = "sha256:" + hashlib.sha256(manifest).hexdigest()
    blobs[child] = manifest
    index = json.dumps({"manifests": [{"digest": child, "platform": {"os": "linux", "architecture": "arm64"}}]})
    assert read_paths(index.encode(), lambda d: io.BytesIO(blobs[d]), ["var/lib/dpkg/status"], "arm64") == \
        {"var/lib/dpkg/status": b"arm"}
    with pytest.raises(OperationError, match="no linux/amd64"):
        read_paths(index.encode(), lambda d: io.BytesIO(blobs[d]), ["x"], "amd64")
    bad, blobs = image([b"not a tar at all"])
    with pytest.raises(OperationError, match="not a tar"):
        read_paths(bad, lambda d: io.BytesIO(blobs[d]), ["x"])


class _Flaky(http.server.BaseHTTPRequestHandler):
    """Serves BODY; the first GET is cut half way; Range is honoured; 404 elsewhere."""

    BODY = bytes(range(256)) * 400
    state: dict[str, Any] = {}

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.state.setdefault("ranges", []).append(self.headers.get("Range"))
        self.state["auth"] = self.headers.get("Authorization")
        if self.path != "/pool/f.deb":
            self.send_error(404)
            return
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
        body = self.BODY[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not self.state.get("cut"):
            self.state["cut"] = True
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self.wfile.write(body)


@pytest.fixture
def flaky() -> Iterator[str]:
    _Flaky.state = {}
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_download_resumes_checks_and_keeps_credentials_out(tmp_path: Path, flaky: str) -> None:
    files = HttpFiles(policy=RetryPolicy(backoff=0.01, sleep=lambda s: None))
    body = _Flaky.BODY
    dest = tmp_path / "f.deb"
    files.download(f"http://user:s3cret@{flaky}/pool/f.deb", dest, hashlib.sha256(body).hexdigest(), len(body))
    assert dest.read_bytes() == body
    ranges = _Flaky.state["ranges"]
    assert ranges[0] is None and ranges[1] == f"bytes={len(body) // 2}-"      # resumed, not started over
    assert _Flaky.state["auth"].startswith("Basic ")
    with pytest.raises(OperationError, match="does not match") as exc:
        files.download(f"http://user:s3cret@{flaky}/pool/f.deb", tmp_path / "g.deb", "0" * 64, len(body))
    assert "s3cret" not in str(exc.value) and not (tmp_path / "g.deb").exists()
    with pytest.raises(NotFoundError) as exc:
        files.fetch_bytes(f"http://user:s3cret@{flaky}/dists/x/InRelease")
    assert "s3cret" not in str(exc.value) and "user" not in str(exc.value)
    assert redact("https://u:p@h:8443/x?y") == "https://h:8443/x"     # a signed URL's token goes too
    with pytest.raises(InputError):
        files.fetch_bytes("ftp://example.invalid/x")


def test_sources_files_both_forms(tmp_path: Path) -> None:
    key = tmp_path / "k.gpg"
    key.write_bytes(b"k")
    one = tmp_path / "a.list"
    one.write_text(f"# comment\ndeb [arch=amd64 signed-by={key}] http://m.example/ubuntu jammy main universe\n"
                   "deb-src http://m.example/ubuntu jammy main\n")
    (entry,) = parse_sources(one, tmp_path / "inline")
    assert (entry.uri, entry.suites, entry.components, entry.keys) == \
        ("http://m.example/ubuntu", ["jammy"], ["main", "universe"], [key])
    many = tmp_path / "b.sources"
    many.write_text(f"Types: deb\nURIs: https://m.example/ubuntu/\nSuites: jammy jammy-updates\nComponents: main\n"
                    f"Signed-By: {key}\n\nTypes: deb\nURIs: http://x\nSuites: a\nComponents: b\nEnabled: no\n")
    (entry,) = parse_sources(many, tmp_path / "inline")
    assert entry.deb822 and entry.suites == ["jammy", "jammy-updates"] and entry.uri == "https://m.example/ubuntu"
    for text, message in [("deb file:/srv/repo jammy main\n", "only http"),
                          (f"deb [signed-by={tmp_path}/nope] http://x jammy main\n", "not a file"),
                          ("deb http://x ./ \n", "expected URI SUITE COMPONENT"),
                          ("deb http://x ../../etc main\n", "invalid suite")]:
        bad = tmp_path / "bad.list"
        bad.write_text(text)
        with pytest.raises(InputError, match=message):
            parse_sources(bad, tmp_path / "inline")


def test_source_matching_and_names() -> None:
    sources = [PackageSource("rocky", Path("a.repo"), "rpm"), PackageSource("rocky8", Path("b.repo"), "rpm"),
               PackageSource("rocky8.6", Path("c.repo"), "rpm")]
    assert match_source("rocky8.6", sources) == sources[2]
    assert match_source("rocky8.9", sources) == sources[1]
    assert match_source("rocky9.4", sources) == sources[0]
    assert match_source("ubuntu22.04", sources) is None
    assert repo_name("http://user:pw@archive.ubuntu.com/ubuntu/") == "archive.ubuntu.com-ubuntu"
    kernels = ["5.15.0-130-generic", "5.15.0-140-generic", "5.15.0-131-lowlatency", "5.15.0-99-generic"]
    assert nearest_kernels("5.15.0-131-generic", kernels) == ("5.15.0-130-generic", "5.15.0-140-generic")


def test_packages_dir_writes_stay_inside_and_never_follow_links(tmp_path: Path) -> None:
    from mirrorkit.packages.mirror import safe_target

    root = tmp_path / "packages"
    (root / "ubuntu22").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "ubuntu22" / "evil").symlink_to(outside)
    assert safe_target(root, "ubuntu22/repo/pool/a.deb") == root / "ubuntu22" / "repo" / "pool" / "a.deb"
    for rel in ("../x", "ubuntu22/../../x", "/etc/passwd", "a//b", "ubuntu22/evil/pool/a.deb", "a\\\\b"):
        with pytest.raises(InputError):
            safe_target(root, rel)
