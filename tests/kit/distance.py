"""A TCP proxy on 127.0.0.1 that puts a real distance between a client and a server: latency and bandwidth.

On loopback every request is free, so a plan of hundreds of small images looks
bound by bytes; a real upstream is 20-200 ms away, and then round trips decide.
Every chunk is delivered ``delay`` seconds after it was read (one way: a request
and its answer cost 2 x ``delay``, and so does a TCP handshake), and each direction
shares one link of ``rate`` bytes per second among all connections. Bytes are
passed through untouched (HTTP, TLS alike).

    with DistanceProxy(upstream.host, delay=0.025, rate=50e6) as far:
        ...  # reach far.host: 50 ms round trips over a 50 MB/s link
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from types import TracebackType

CHUNK = 64 << 10


class _Link:
    """One direction's bandwidth, shared by every connection: a virtual clock of when the link is free."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.free_at = 0.0
        self.lock = threading.Lock()

    def wait(self, size: int) -> None:
        if self.rate <= 0:
            return
        with self.lock:
            start = max(time.monotonic(), self.free_at)
            self.free_at = start + size / self.rate
            until = self.free_at
        delay = until - time.monotonic()
        if delay > 0:
            time.sleep(delay)


class DistanceProxy:
    def __init__(self, upstream: str, delay: float = 0.025, rate: float = 50e6) -> None:
        host, _, port = upstream.split("://", 1)[-1].rstrip("/").rpartition(":")
        self.upstream = (host, int(port))
        self.delay = delay
        self.down, self.up = _Link(rate), _Link(rate)
        self._server: socket.socket | None = None
        self._stop = threading.Event()
        self._socks: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.port = 0

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> DistanceProxy:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen(256)
        server.settimeout(0.2)
        self._server, self.port = server, server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True, name=f"distance-{self.port}").start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            socks = list(self._socks)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        if self._server is not None:
            self._server.close()

    def __enter__(self) -> DistanceProxy:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _accept(self) -> None:
        assert self._server is not None
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        time.sleep(self.delay)                      # the SYN travels...
        try:
            server = socket.create_connection(self.upstream)
        except OSError:
            client.close()
            return
        time.sleep(self.delay)                      # ...and the SYN-ACK comes back
        for sock in (client, server):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._socks |= {client, server}
        for src, dst, link in ((client, server, self.up), (server, client, self.down)):
            pending: queue.SimpleQueue[tuple[float, bytes]] = queue.SimpleQueue()
            threading.Thread(target=self._read, args=(src, pending), daemon=True).start()
            threading.Thread(target=self._deliver, args=(pending, dst, link), daemon=True).start()

    def _read(self, src: socket.socket, pending: queue.SimpleQueue[tuple[float, bytes]]) -> None:
        while True:
            try:
                data = src.recv(CHUNK)
            except OSError:
                data = b""
            pending.put((time.monotonic() + self.delay, data))
            if not data:
                return

    def _deliver(self, pending: queue.SimpleQueue[tuple[float, bytes]], dst: socket.socket, link: _Link) -> None:
        while True:
            due, data = pending.get()
            late = due - time.monotonic()
            if late > 0:
                time.sleep(late)
            if not data:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                return
            link.wait(len(data))
            try:
                dst.sendall(data)
            except OSError:
                return
