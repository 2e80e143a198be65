"""A small forward proxy on 127.0.0.1, the corporate proxy of the connected side.

It speaks the two forms clients use: ``CONNECT host:port`` (a tunnel, for
``https://`` — TLS then runs end to end between client and registry, so the
client's CA settings still decide) and absolute-form requests
(``GET http://host:port/v2/...``, for plain HTTP through ``HTTP_PROXY``). Every
tunnel and request is recorded, so a test can assert that traffic went through
the proxy, and that ``NO_PROXY`` hosts did not. Only loopback targets are
served; anything else is answered 403, so a test can never reach out.

    with ConnectProxy() as proxy:
        env HTTPS_PROXY=proxy.url ...; assert proxy.connects == ["127.0.0.1:5000"]
"""

from __future__ import annotations

import contextlib
import select
import socket
import socketserver
import threading
import urllib.parse
from types import TracebackType
from typing import Any

LOOPBACK = ("127.0.0.1", "localhost")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: ConnectProxy


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        with contextlib.suppress(OSError):  # a client or registry hanging up mid-way
            self.server.owner.serve_connection(self)


def _pipe(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until either side closes."""
    socks = [a, b]
    while True:
        ready, _, broken = select.select(socks, [], socks, 30)
        if broken or not ready:
            return
        for s in ready:
            data = s.recv(65536)
            if not data:
                return
            (b if s is a else a).sendall(data)


class ConnectProxy:
    def __init__(self) -> None:
        self.connects: list[str] = []  # host:port of every CONNECT tunnel
        self.requests: list[tuple[str, str]] = []  # (method, absolute URL) of every plain-HTTP request
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("proxy not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> ConnectProxy:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="ConnectProxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ConnectProxy:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- one client connection ----------------------------------------------------------------

    def serve_connection(self, h: Any) -> None:
        while True:
            line = h.rfile.readline(65537).decode("latin-1")
            if not line.strip():
                return
            method, target, _ = line.split(" ", 2)
            headers: list[str] = []
            while (header := h.rfile.readline(65537).decode("latin-1")) not in ("\r\n", "\n", ""):
                headers.append(header.rstrip("\r\n"))
            if method == "CONNECT":
                self._tunnel(h, target)
                return
            if not self._forward(h, method, target, headers):
                return

    def _tunnel(self, h: Any, target: str) -> None:
        host, _, port = target.rpartition(":")
        with self._lock:
            self.connects.append(target)
        if host not in LOOPBACK:
            h.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            return
        with socket.create_connection((host, int(port)), timeout=30) as upstream:
            h.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            h.wfile.flush()
            _pipe(h.connection, upstream)

    def _forward(self, h: Any, method: str, target: str, headers: list[str]) -> bool:
        """One absolute-form request, relayed with ``Connection: close``; False ends the client connection."""
        url = urllib.parse.urlsplit(target)
        with self._lock:
            self.requests.append((method, target))
        if url.scheme != "http" or url.hostname not in LOOPBACK:
            h.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return False
        length = 0
        kept = []
        for header in headers:
            name, _, value = header.partition(":")
            if name.strip().lower() in ("connection", "proxy-connection", "keep-alive", "proxy-authorization"):
                continue
            if name.strip().lower() == "content-length":
                length = int(value.strip() or 0)
            kept.append(header)
        body = h.rfile.read(length) if length else b""
        path = url.path + (f"?{url.query}" if url.query else "")
        head = f"{method} {path or '/'} HTTP/1.1\r\n" + "".join(f"{k}\r\n" for k in kept) + "Connection: close\r\n\r\n"
        with socket.create_connection((url.hostname, url.port or 80), timeout=30) as upstream:
            upstream.sendall(head.encode("latin-1") + body)
            while data := upstream.recv(65536):
                h.wfile.write(data)
        return False
