"""Helm charts where users find them: pushed to a registry as OCI artifacts, or served by a static Helm repository.

``push_oci_chart`` stores a chart the way ``helm push`` does (config
``application/vnd.cncf.helm.config.v1+json`` holding Chart.yaml's metadata as JSON, one
``application/vnd.cncf.helm.chart.content.v1.tar+gzip`` layer, the .tgz unchanged).
``HelmRepository`` writes ``index.yaml`` (entries with version, digest, relative urls),
the archives and optional ``.prov`` files into a folder and serves it from 127.0.0.1 with
Python's own ``http.server`` in a thread: a static web server, as most Helm repositories
are. It counts requests and Range headers, and can cut an answer short once, so resumed
downloads can be tested. Independent of mirrorkit's own code, on purpose.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kit.images import OCI_MANIFEST, Blob, canonical_json, sha256_digest
from kit.push import push_blob, push_manifest

HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
HELM_CHART = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
TITLE = "org.opencontainers.image.title"


@dataclass(frozen=True)
class OciChart:
    manifest: bytes
    digest: str
    size: int
    media_type: str = OCI_MANIFEST


def push_oci_chart(base_url: str, repo: str, meta: dict[str, Any], archive: bytes) -> OciChart:
    """``helm push``'s artifact for ``archive`` at ``repo:VERSION`` (``+`` -> ``_`` in the tag)."""
    config = Blob.of(canonical_json(meta), HELM_CONFIG)
    layer = Blob.of(archive, HELM_CHART)
    manifest = canonical_json({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config.descriptor(),
        "layers": [{**layer.descriptor(), "annotations": {TITLE: f"{meta['name']}-{meta['version']}.tgz"}}],
        "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"}})
    for blob in (config, layer):
        push_blob(base_url, repo, blob)
    push_manifest(base_url, repo, str(meta["version"]).replace("+", "_"), manifest, OCI_MANIFEST)
    return OciChart(manifest, sha256_digest(manifest), len(manifest))


@dataclass
class Served:
    requests: list[tuple[str, str | None]] = field(default_factory=list)   # (path, Range header)
    cut_once: set[str] = field(default_factory=set)                         # paths to cut short on first GET
    busy_once: set[str] = field(default_factory=set)                        # paths answered 503 on first GET


class HelmRepository:
    """A static Helm repository in ``root``, served on 127.0.0.1 under ``/repo``."""

    def __init__(self, root: Path, tls: ssl.SSLContext | None = None, user: tuple[str, str] | None = None) -> None:
        """``tls``: serve HTTPS with this server context; ``user``: require this basic-auth user and password."""
        self.root = root
        self.tls = tls
        self.user = user
        (root / "repo" / "charts").mkdir(parents=True, exist_ok=True)
        self.entries: dict[str, list[dict[str, Any]]] = {}
        self.served = Served()
        self._server: http.server.ThreadingHTTPServer | None = None

    def add(self, name: str, version: str, archive: bytes, prov: bytes | None = None,
            digest: str | None = None) -> str:
        """Publish an archive (and its .prov); ``digest`` overrides what the index says (hex)."""
        rel = f"charts/{name}-{version}.tgz"
        (self.root / "repo" / rel).write_bytes(archive)
        if prov is not None:
            (self.root / "repo" / f"{rel}.prov").write_bytes(prov)
        self.entries.setdefault(name, []).insert(0, {
            "apiVersion": "v2", "name": name, "version": version, "appVersion": version,
            "digest": digest or hashlib.sha256(archive).hexdigest(), "urls": [rel],
            "created": "2024-01-01T00:00:00Z"})
        self.write_index()
        return rel

    def write_index(self) -> None:
        doc = {"apiVersion": "v1", "entries": self.entries, "generated": "2024-01-01T00:00:00Z"}
        (self.root / "repo" / "index.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))

    @property
    def url(self) -> str:
        assert self._server is not None
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}/repo"

    def __enter__(self) -> HelmRepository:
        served, root = self.served, self.root
        wanted = "Basic " + base64.b64encode(f"{self.user[0]}:{self.user[1]}".encode()).decode() if self.user else None

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(root), **kwargs)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
                pass

            def do_GET(self) -> None:
                served.requests.append((self.path, self.headers.get("Range")))
                if wanted is not None and self.headers.get("Authorization") != wanted:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="charts"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                path = root / self.path.lstrip("/")
                rng = self.headers.get("Range")
                if self.path in served.busy_once:
                    served.busy_once.discard(self.path)
                    self.send_response(503)
                    self.send_header("Retry-After", "0")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.path in served.cut_once and path.is_file():
                    served.cut_once.discard(self.path)
                    data = path.read_bytes()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if rng and rng.startswith("bytes=") and path.is_file():
                    data = path.read_bytes()
                    start = int(rng[6:].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                    self.send_header("Content-Length", str(len(data) - start))
                    self.end_headers()
                    self.wfile.write(data[start:])
                    return
                super().do_GET()

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
