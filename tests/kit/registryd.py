"""A real ``docker-registry`` (distribution 2.8) process on 127.0.0.1, for tests.

Mocked registries agree with whatever the client believes; a real one rejects a
wrong digest, a missing child manifest or a bad password the way production does.
Each server lives in its own temp dir (config, storage, htpasswd, log) and is
killed at stop(), at interpreter exit, and (when started from the main thread) by
the kernel if the Python process dies without cleaning up.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx
import yaml

from kit import daemon

DEFAULT_BINARY = "docker-registry"

_live: set[RegistryServer] = set()


class RegistryStartError(RuntimeError):
    """The registry process did not come up; the message carries its log tail."""


def free_port() -> int:
    """A port that was free a moment ago; the race is acceptable on loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RegistryServer:
    """A throw-away registry; use as a context manager or call start()/stop().

    ``users`` enables htpasswd basic auth (bcrypt at the minimum cost, because the
    registry re-hashes the password on every request).  ``tls_cert``/``tls_key``
    serve HTTPS with the caller's files.  restart() keeps port, storage and the HTTP
    secret, so an upload begun before a restart can be resumed after it.
    """

    def __init__(
        self,
        *,
        users: dict[str, str] | None = None,
        tls_cert: str | os.PathLike[str] | None = None,
        tls_key: str | os.PathLike[str] | None = None,
        keep: bool = False,
        binary: str = DEFAULT_BINARY,
        startup_timeout: float = 10.0,
        access_log: bool = False,
        delete: bool = True,
    ) -> None:
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        self.users = dict(users or {})
        self.tls_cert = Path(tls_cert) if tls_cert is not None else None
        self.tls_key = Path(tls_key) if tls_key is not None else None
        self.keep = keep
        self.binary = binary
        self.startup_timeout = startup_timeout
        self.access_log = access_log
        self.delete = delete
        self.port: int | None = None
        self.workdir: Path | None = None
        self._secret = secrets.token_hex(16)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # -- addresses -------------------------------------------------------------------

    @property
    def host(self) -> str:
        if self.port is None:
            raise RuntimeError("registry not started")
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        scheme = "https" if self.tls_cert else "http"
        return f"{scheme}://{self.host}"

    @property
    def storage_dir(self) -> Path:
        return self._dir / "storage"

    @property
    def log_path(self) -> Path:
        return self._dir / "registry.log"

    @property
    def config_path(self) -> Path:
        return self._dir / "config.yml"

    @property
    def auth(self) -> tuple[str, str] | None:
        """The first user's credentials, the common case in tests."""
        return next(iter(self.users.items()), None)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def _dir(self) -> Path:
        if self.workdir is None:
            raise RuntimeError("registry not started")
        return self.workdir

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> RegistryServer:
        if self.running:
            return self
        if shutil.which(self.binary) is None:
            raise RegistryStartError(f"{self.binary} not found on PATH")
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="mirrorkit-registry-"))
            self.storage_dir.mkdir()
        if self.port is None:
            self.port = free_port()
        self.config_path.write_text(yaml.safe_dump(self._config(), sort_keys=False))
        self._spawn()
        _live.add(self)
        try:
            self._wait_ready()
        except BaseException:
            self._terminate()
            raise
        return self

    def stop(self) -> None:
        """Stop the process and, unless ``keep``, delete config, storage and log."""
        self._terminate()
        _live.discard(self)
        if self.workdir is not None and not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def restart(self, after: float = 0.0) -> RegistryServer:
        """Same port, storage and secret: for fault tests that kill the registry mid-way
        (``after``: seconds it stays down)."""
        self._terminate()
        time.sleep(after)
        return self.start()

    def garbage_collect(self) -> str:
        """``docker-registry garbage-collect CONFIG`` with the server stopped (as distribution
        advises), then started again on the same port and storage; returns the tool's output."""
        self._terminate()
        result = subprocess.run([self.binary, "garbage-collect", str(self.config_path)], capture_output=True,
                                text=True, timeout=120, stdin=subprocess.DEVNULL, check=False)
        self.start()
        if result.returncode != 0:
            raise RuntimeError(f"garbage-collect exited with {result.returncode}: {result.stderr[-2000:]}")
        return result.stdout + result.stderr

    def storage_bytes(self) -> int:
        """Bytes of every file under the storage folder: what garbage collection frees."""
        return sum(p.stat().st_size for p in self.storage_dir.rglob("*") if p.is_file())

    def log_tail(self, lines: int = 40) -> str:
        return daemon.tail(self.log_path, lines)

    def __enter__(self) -> RegistryServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<RegistryServer {self.url if self.port else '-'} {state}>"

    # -- internals -------------------------------------------------------------------

    def _config(self) -> dict[str, Any]:
        http: dict[str, Any] = {"addr": self.host, "secret": self._secret}
        if self.tls_cert and self.tls_key:
            http["tls"] = {"certificate": str(self.tls_cert), "key": str(self.tls_key)}
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": not self.access_log}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage_dir)},
                "delete": {"enabled": self.delete},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": http,
            "health": {"storagedriver": {"enabled": False}},
        }
        if self.users:
            htpasswd = self._dir / "htpasswd"
            htpasswd.write_text("".join(f"{u}:{_bcrypt(p)}\n" for u, p in self.users.items()))
            config["auth"] = {"htpasswd": {"realm": "mirrorkit-test", "path": str(htpasswd)}}
        return config

    def _spawn(self) -> None:
        argv = [self.binary, "serve", str(self.config_path)]
        self._proc, self._log = daemon.start(argv, self.log_path, self._dir)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        with httpx.Client(verify=False, timeout=1.0) as client:
            while True:
                assert self._proc is not None
                if self._proc.poll() is not None:
                    raise RegistryStartError(
                        f"registry exited with {self._proc.returncode}:\n{self.log_tail()}"
                    )
                try:
                    if client.get(f"{self.url}/v2/").status_code in (200, 401):
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RegistryStartError(
                        f"registry not ready on {self.url} after {self.startup_timeout}s:\n"
                        f"{self.log_tail()}"
                    )
                time.sleep(0.05)

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        log, self._log = self._log, None
        daemon.stop(proc, log)


def _bcrypt(password: str) -> str:
    import bcrypt  # test-only dependency: import it only when auth is asked for

    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()


@atexit.register
def _stop_all() -> None:
    for server in list(_live):
        with contextlib.suppress(Exception):
            server.stop()
