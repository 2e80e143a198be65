"""A fault-injecting HTTP reverse proxy on 127.0.0.1, in front of a real registry, for tests.

Every request is forwarded (method, path, query, headers; bodies streamed both
ways) with ``Host`` set to the registry, and absolute ``Location`` headers naming
the registry are rewritten so clients come back through the proxy. A registry
that cannot be reached (stopped, restarting) is a 502, as from a real gateway.
A :class:`Fault` fires on a bounded number of requests matching its method, path
and query regexes (after letting ``skip`` through):

    status               answer ``status`` instead (503, or 429 with ``retry_after``: a string or a
                         callable returning one, e.g. an HTTP date computed when it fires), with ``body``
                         (a registry's JSON error body, say) when given
    drop                 close the connection after ``after`` bytes of the response body, or of the
                         request body with ``request=True`` (an upload cut mid-way)
    stall                hold the request ``seconds`` before forwarding it
    location             make the Location relative and/or append the query ``params``
    mount_refused        forward a cross-repo mount POST without its query: 202 + a fresh upload
    paginate             serve a tag list / catalog ``page`` items at a time with a Link header
                         (``loop=True``: the Link always points back at the first page)
    content_type_params  append ``; charset=utf-8`` to a manifest's Content-Type
    ignore_range         forward without the Range header, as a CDN that always sends the whole object

``every=N`` makes a fault fire on every Nth matching request only, ``rate=p`` on a
fraction p of them drawn from ``random.Random(seed)`` (reproducible).

``proxy.upload_rate`` (bytes/s) reads every request body no faster than that, a slow link for
uploads; ``proxy.uploads`` records each body read (start, end, bytes), and :func:`peak_overlap`
of their spans is the upload concurrency the registry saw.

``proxy.log`` holds a :class:`Hit` per answered request (logged when answered; ``seq`` is the
arrival order, and ``proxy.since(mark)`` selects by it); ``fault.fired`` counts firings.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import random
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote

HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade", "transfer-encoding",
       "date", "server", "host"}


@dataclass
class Fault:
    kind: str
    path: str = ""                 # regex searched in the request path (without the query)
    method: str = ".*"             # regex matched against the whole method
    query: str = ""                # regex searched in the query string
    times: int = 1                 # matching requests it fires on: always bounded
    skip: int = 0                  # matching requests let through untouched first
    status: int = 503
    retry_after: str | Callable[[], str] | None = None
    body: bytes = b""              # status: the answer's body (sent as application/json)
    after: int = 0                 # drop: body bytes that get through
    request: bool = False          # drop: cut the request body rather than the response's
    seconds: float = 0.0           # stall
    relative: bool = False         # location
    params: str = ""               # location
    page: int = 2                  # paginate
    loop: bool = False             # paginate
    every: int = 0                 # fire on every Nth matching request only (after skip)
    rate: float = 0.0              # fire on this fraction of matching requests, drawn from Random(seed)
    seed: int = 0
    seen: int = 0
    fired: int = 0

    def due(self) -> bool:
        """Does this matching request (already counted in ``seen``) get the fault?"""
        if self.every:
            return (self.seen - self.skip) % self.every == 0
        if self.rate:
            if not hasattr(self, "_rng"):
                self._rng = random.Random(self.seed)
            return self._rng.random() < self.rate
        return True

    def matches(self, method: str, path: str, query: str, length: int) -> bool:
        if self.kind == "mount_refused" and "mount=" not in query:
            return False
        if self.kind == "drop" and self.request and 0 <= length <= self.after:
            return False           # a body this short cannot be cut after `after` bytes
        return bool(re.fullmatch(self.method, method) and re.search(self.path, path)
                    and re.search(self.query, query))


@dataclass(frozen=True)
class Hit:
    method: str
    path: str
    query: str
    status: int                    # 0: the connection was dropped before any status
    fault: str = ""
    seq: int = 0                   # arrival order: hits are logged when answered, which can be much later
    byte_range: str = ""           # the request's Range header: a resumed download asks for the rest


class _Cut(Exception):
    pass


@dataclass
class Upload:
    """One request body the proxy read (an upload's PUT or PATCH): when it began and ended, and its bytes."""

    method: str
    path: str
    query: str
    start: float
    end: float = 0.0               # 0: still being read
    received: int = 0


def peak_overlap(spans: list[tuple[float, float]]) -> int:
    """The most spans open at one moment (an end at the same instant as a start does not overlap it)."""
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    peak = now = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


class _Body:
    """The request body (by length, or chunked: ``left`` < 0) as a file for http.client.

    With ``cut``, that many bytes get through, then _Cut is raised: the upload is dropped.
    With ``rate`` (bytes per second), it is read no faster than that: a slow link.
    """

    def __init__(self, rfile: Any, left: int, cut: int | None, rate: float | None = None,
                 record: Upload | None = None) -> None:
        self.rfile, self.left, self.cut = rfile, left, cut
        self.rate, self.record = rate, record
        self.began = time.monotonic()
        self.got = 0

    def read(self, size: int = 65536) -> bytes:
        if self.rate:
            size = min(size, max(1024, int(self.rate / 50)))   # ~20 ms of the link per read
        data = self._read(size)
        self.got += len(data)
        if self.record is not None:
            self.record.received = self.got
        if self.rate:
            ahead = self.got / self.rate - (time.monotonic() - self.began)
            if ahead > 0:
                time.sleep(ahead)
        return data

    def _read(self, size: int) -> bytes:
        if self.left < 0:          # one decoded chunk per read (trailers are not supported)
            n = int(self.rfile.readline(1024).split(b";")[0].strip() or b"0", 16)
            data, self.left = self.rfile.read(n), -1 if n else 0
            self.rfile.readline(1024)
        else:
            data = self.rfile.read(min(size, self.left))
            self.left -= len(data)
        if self.cut is not None:
            if data and self.cut <= 0:
                raise _Cut
            data, self.cut = data[:self.cut], self.cut - len(data)
        return data


class FaultProxy:
    def __init__(self, upstream: str, faults: list[Fault] | None = None, timeout: float = 15.0) -> None:
        self.upstream = upstream.split("://", 1)[-1].rstrip("/")   # the registry's host:port
        self.faults = list(faults or [])
        self.timeout = timeout
        self.log: list[Hit] = []
        self.arrived = 0               # requests received so far; a Hit's seq is its place in this count
        self.forwarding = 0            # requests being passed to the registry or answered right now
        self.upload_rate: float | None = None   # bytes/s each request body is read at (None: as fast as it comes)
        self.uploads: list[Upload] = []         # every request body read (PUT/PATCH with a body)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._unstall = threading.Event()
        self._conns: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("proxy not started")
        return int(self._server.server_address[1])

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def add(self, *faults: Fault) -> None:
        with self._lock:
            self.faults.extend(faults)

    def hits(self, method: str = ".*", path: str = "") -> list[Hit]:
        with self._lock:
            return [h for h in self.log if re.fullmatch(method, h.method) and re.search(path, h.path)]

    def end_stalls(self) -> None:
        """Cut every stalled request now: a killed client's held request must never reach the registry late."""
        self._unstall.set()

    def since(self, mark: int) -> list[Hit]:
        """Hits for requests that arrived after ``arrived`` was ``mark``, whenever they were answered."""
        with self._lock:
            return [h for h in self.log if h.seq > mark]

    def start(self) -> FaultProxy:
        self._stopping = threading.Event()
        self._unstall = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"faultproxy-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, end stalls, cut open connections, join every thread (block_on_close)."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        self._unstall.set()
        server.shutdown()
        with self._lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _take(self, method: str, path: str, query: str, length: int) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.fired < fault.times and fault.matches(method, path, query, length):
                    fault.seen += 1
                    if fault.seen > fault.skip and fault.due():
                        fault.fired += 1
                        return fault
            return None


class _Server(ThreadingHTTPServer):
    block_on_close = True          # server_close() joins the handler threads
    proxy: FaultProxy

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass                       # clients killed mid-request are the point of the tests, not news


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms delayed-ACK stalls
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    def setup(self) -> None:
        super().setup()
        with self.server.proxy._lock:
            self.server.proxy._conns.add(self.connection)

    def finish(self) -> None:
        with self.server.proxy._lock:
            self.server.proxy._conns.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def do_ANY(self) -> None:
        proxy = self.server.proxy
        path, _, query = self.path.partition("?")
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        length = -1 if chunked else int(self.headers.get("Content-Length") or 0)
        with proxy._lock:
            proxy.arrived += 1
            seq = proxy.arrived
        fault = proxy._take(self.command, path, query, length)
        kind = fault.kind if fault else ""
        self._req, self._answered = (self.command, path, query, kind, seq, self.headers.get("Range", "")), False
        cut = fault.after if fault and kind == "drop" and fault.request else None
        record = None
        if self.command in ("PUT", "PATCH") and (length > 0 or chunked):
            record = Upload(self.command, path, query, time.monotonic())
            with proxy._lock:
                proxy.uploads.append(record)
        body = _Body(self.rfile, length, cut, proxy.upload_rate, record)
        if fault and kind == "status":
            for _ in iter(body.read, b""):                         # drain: the connection stays usable
                pass
            value = fault.retry_after() if callable(fault.retry_after) else fault.retry_after
            extra = [("Content-Type", "application/json")] if fault.body else []
            return self._answer(fault.status, ([("Retry-After", value)] if value is not None else []) + extra,
                                fault.body)
        if fault and kind == "stall" and proxy._unstall.wait(fault.seconds):
            return self._abort()                                   # stalls ended: never forward late
        with proxy._lock:
            proxy.forwarding += 1
        try:
            self._forward(body, chunked, length, fault)
        finally:
            if record is not None:
                record.end = time.monotonic()
            with proxy._lock:
                proxy.forwarding -= 1

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_ANY

    def _forward(self, body: _Body, chunked: bool, length: int, fault: Fault | None) -> None:
        proxy, kind = self.server.proxy, (fault.kind if fault else "")
        path, _, query = self.path.partition("?")
        headers: dict[str, str] = {}
        for key in dict.fromkeys(k.lower() for k in self.headers):   # a repeated header (Accept) is one list
            if key not in HOP:
                headers[key] = ", ".join(self.headers.get_all(key) or [])
        headers["host"] = proxy.upstream
        if chunked:
            headers["transfer-encoding"] = "chunked"
        if kind == "ignore_range":
            headers.pop("range", None)          # a CDN that always answers with the whole object
        target = path + (f"?{query}" if query and kind not in ("mount_refused", "paginate") else "")
        conn = http.client.HTTPConnection(proxy.upstream, timeout=proxy.timeout)
        try:
            conn.request(self.command, target, body=body if length > 0 or chunked else None, headers=headers,
                         encode_chunked=chunked)
            resp = conn.getresponse()
            self._relay(resp, fault)
        except _Cut:
            self._abort()
        except OSError:
            if self._answered:     # the client or the registry went away mid-answer
                return self._abort()
            self.close_connection = True    # the registry is down or restarting; the body may be half read
            self._answer(502, [("Connection", "close")], b"upstream unreachable\n")
        finally:
            conn.close()

    def _relay(self, resp: http.client.HTTPResponse, fault: Fault | None) -> None:
        kind, origin = (fault.kind if fault else ""), self.server.proxy.url
        out = []
        for key, value in resp.getheaders():
            low = key.lower()
            if low in HOP or (kind == "paginate" and low in ("content-length", "link")):
                continue
            if low == "location":
                value = value.replace(f"http://{self.server.proxy.upstream}", origin)
                if fault and kind == "location" and fault.relative:
                    value = value.removeprefix(origin)
                if fault and kind == "location" and fault.params:
                    value += ("&" if "?" in value else "?") + fault.params
            if low == "content-type" and kind == "content_type_params" and "manifest" in value:
                value += "; charset=utf-8"
            out.append((key, value))
        source: Any = resp
        declared = resp.getheader("Content-Length")
        if self.command == "HEAD" or resp.status in (204, 304):
            left = 0
        elif declared is None or (fault and kind == "paginate"):   # buffered, sent with a length
            data = self._page(fault, resp.read(), out) if fault and kind == "paginate" else resp.read()
            source, left = io.BytesIO(data), len(data)
            out.append(("Content-Length", str(left)))
        else:
            left = int(declared)
        budget = fault.after if fault and kind == "drop" else None
        if budget is not None and left <= budget:
            return self._abort()   # nothing to cut inside the body: the whole answer is lost
        self._answer(resp.status, out, None)
        while left > 0:
            chunk = source.read(min(65536, left, 65536 if budget is None else max(budget, 1)))
            if not chunk or (budget is not None and budget <= 0):
                return self._abort()
            self.wfile.write(chunk)
            left -= len(chunk)
            budget = None if budget is None else budget - len(chunk)

    def _answer(self, status: int, headers: list[tuple[str, Any]], data: bytes | None) -> None:
        """Status and headers; with ``data`` also the whole body (and its length)."""
        self._hit(status)
        self._answered = True
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, str(value))
        if data is not None:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)

    def _page(self, fault: Fault, data: bytes, out: list[tuple[str, Any]]) -> bytes:
        """One page of the registry's full list, with the Link to the next (or, looping, the first)."""
        path, _, query = self.path.partition("?")
        doc = json.loads(data or b"{}")
        key = "tags" if "tags" in doc else "repositories"
        if key not in doc:         # an error answer: passed on as it is
            return data
        items = sorted(doc.get(key) or [])       # distribution lists tags in storage order
        last = parse_qs(query).get("last", [""])[0]
        start = 0 if fault.loop or not last else next((i for i, t in enumerate(items) if t > last), len(items))
        page = items[start:start + fault.page]
        if fault.loop:
            out.append(("Link", f'<{path}?n={fault.page}>; rel="next"'))
        elif start + fault.page < len(items):
            out.append(("Link", f'<{path}?n={fault.page}&last={quote(page[-1])}>; rel="next"'))
        return json.dumps({**doc, key: page}).encode()

    def _hit(self, status: int) -> None:
        with self.server.proxy._lock:
            method, path, query, kind, seq, byte_range = self._req
            self.server.proxy.log.append(Hit(method, path, query, status, kind, seq, byte_range))

    def _abort(self) -> None:
        """Close the connection now, without (the rest of) an answer."""
        if not self._answered:
            self._hit(0)
            self._answered = True
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
