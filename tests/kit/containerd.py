"""A real, private ``containerd`` (1.6+) on a unix socket in a temp dir, for tests.

Pulling through a mirror with the runtime the cluster will use is the only proof that
the mirror's paths, media types and digests are what containerd expects.  Each daemon
gets its own ``root``, ``state`` and sockets in a temp dir, the ``native`` snapshotter
(plain directory copies: nothing is mounted that outlives an unpack) and no CRI,
runtime, cgroup or ``/opt`` plugins, so it starts in ~50 ms and touches nothing
global.  Needs root.  Image operations go through ``ctr`` in namespace ``mirrorkit``.

Note that ``ctr`` (the client) resolves and fetches, so registry requests come from the
``ctr`` process; the daemon stores content and unpacks it.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from kit import daemon

DEFAULT_BINARY = "containerd"
DEFAULT_CTR = "ctr"
NAMESPACE = "mirrorkit"
SNAPSHOTTER = "native"

# Everything a pull-and-unpack daemon does not need: CRI (networking, /var/lib/cni),
# the /opt/containerd installer, snapshotters other than native (overlayfs mounts,
# the others probe their filesystems) and the task/runtime/cgroup stack.
DISABLED_PLUGINS: tuple[str, ...] = (
    "io.containerd.grpc.v1.cri",
    "io.containerd.internal.v1.opt",
    "io.containerd.internal.v1.restart",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.overlayfs",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.runtime.v1.linux",
    "io.containerd.runtime.v2.task",
    "io.containerd.monitor.v1.cgroups",
    "io.containerd.service.v1.tasks-service",
    "io.containerd.grpc.v1.tasks",
)

_MAX_SOCKET_PATH = 100  # sun_path is 108 bytes; leave room for ".ttrpc"
_MNT_DETACH = 2

_live: set[Containerd] = set()


class ContainerdError(RuntimeError):
    """A ``ctr`` command failed; the message carries its stderr tail."""


class ContainerdStartError(ContainerdError):
    """The daemon did not come up; the message carries its log tail."""


def _toml_str(value: str | os.PathLike[str]) -> str:
    # JSON string escapes are valid TOML basic-string escapes.
    return json.dumps(os.fspath(value))


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def write_hosts_toml(
    hosts_dir: Path,
    upstream: str,
    mirror_url: str,
    path_prefix: str = "",
    skip_verify: bool = False,
    ca: Path | None = None,
    *,
    server: str | None = None,
) -> Path:
    """Write ``hosts_dir/<upstream>/hosts.toml`` sending ``<upstream>/x/y`` to the mirror.

    With ``path_prefix`` the mirror host is ``<mirror_url>/v2/<prefix>`` with
    ``override_path = true``, so ``nvcr.io/nvidia/x`` becomes ``/v2/<prefix>/nvidia/x``.
    ``server`` is the fallback containerd tries after the mirror; when it is unset
    containerd falls back to ``https://<upstream>`` itself, so tests must set it
    (e.g. to an unused loopback port) to keep pulls off the network.
    """
    base = mirror_url.rstrip("/")
    prefix = path_prefix.strip("/")
    lines = []
    if server is not None:
        lines += [f"server = {_toml_str(server)}", ""]
    lines.append(f"[host.{_toml_str(f'{base}/v2/{prefix}' if prefix else base)}]")
    lines.append('  capabilities = ["pull", "resolve"]')
    if prefix:
        lines.append("  override_path = true")
    if skip_verify:
        lines.append("  skip_verify = true")
    if ca is not None:
        lines.append(f"  ca = {_toml_str(Path(ca).resolve())}")
    path = Path(hosts_dir) / upstream / "hosts.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


class Containerd:
    """A throw-away containerd; use as a context manager or call start()/stop()."""

    def __init__(
        self,
        *,
        namespace: str = NAMESPACE,
        keep: bool = False,
        binary: str = DEFAULT_BINARY,
        ctr: str = DEFAULT_CTR,
        startup_timeout: float = 10.0,
        base_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.namespace = namespace
        self.keep = keep
        self.binary = binary
        self.ctr = ctr
        self.startup_timeout = startup_timeout
        self.base_dir = base_dir
        self.snapshotter = SNAPSHOTTER
        self.workdir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # -- paths -----------------------------------------------------------------------

    @property
    def _dir(self) -> Path:
        if self.workdir is None:
            raise RuntimeError("containerd not started")
        return self.workdir

    @property
    def address(self) -> str:
        """The grpc unix socket, for ``ctr --address``."""
        return str(self._dir / "containerd.sock")

    @property
    def config_path(self) -> Path:
        return self._dir / "config.toml"

    @property
    def log_path(self) -> Path:
        return self._dir / "containerd.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> Containerd:
        if self.running:
            return self
        for name in (self.binary, self.ctr):
            if shutil.which(name) is None:
                raise ContainerdStartError(f"{name} not found on PATH")
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="mirrorkit-containerd-", dir=self.base_dir))
        if len(self.address) > _MAX_SOCKET_PATH:
            path = self.address
            self.stop()
            raise ContainerdStartError(f"socket path too long for AF_UNIX: {path}; pass base_dir")
        self.config_path.write_text(self._config())
        self._spawn()
        _live.add(self)
        try:
            self._wait_ready()
        except BaseException:
            self._terminate()
            raise
        return self

    def stop(self) -> None:
        """Stop the daemon and, unless ``keep``, delete its root, state, sockets and log."""
        self._terminate()
        _live.discard(self)
        if self.workdir is not None and not self.keep:
            _unmount_under(self.workdir)
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def log_tail(self, lines: int = 40) -> str:
        return daemon.tail(self.log_path, lines)

    def __enter__(self) -> Containerd:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.address if self.workdir else "-"
        return f"<Containerd {where} {'running' if self.running else 'stopped'}>"

    # -- client ----------------------------------------------------------------------

    def run_ctr(
        self, *args: str, check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """``ctr --address SOCK -n NAMESPACE ARGS...``; raises ContainerdError on failure."""
        cmd = [self.ctr, "--address", self.address, "-n", self.namespace, *args]
        try:
            result = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired as exc:
            raise ContainerdError(f"{' '.join(cmd)} timed out after {timeout}s") from exc
        if check and result.returncode != 0:
            raise ContainerdError(
                f"{' '.join(cmd)} exited with {result.returncode}:\n{_tail(result.stderr)}"
            )
        return result

    def pull(
        self,
        ref: str,
        hosts_dir: Path | None = None,
        platform: str | None = None,
        all_platforms: bool = False,
        *,
        plain_http: bool = False,
        check: bool = True,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """``ctr images pull`` (fetch and unpack) of a fully qualified ``ref``.

        Without ``hosts_dir`` containerd talks to the registry named in ``ref``, so
        tests should always pass one (see write_hosts_toml's ``server``).
        """
        args = ["images", "pull", "--snapshotter", self.snapshotter]
        if hosts_dir is not None:
            args += ["--hosts-dir", os.fspath(hosts_dir)]
        if platform is not None:
            args += ["--platform", platform]
        if all_platforms:
            args.append("--all-platforms")
        if plain_http:
            args.append("--plain-http")
        return self.run_ctr(*args, ref, check=check, timeout=timeout)

    def images(self) -> list[str]:
        """Image names in this namespace."""
        out = self.run_ctr("images", "ls", "-q").stdout
        return [line.strip() for line in out.splitlines() if line.strip()]

    def image_digest(self, ref: str) -> str:
        """The target digest (index or manifest) containerd recorded for ``ref``."""
        out = self.run_ctr("images", "ls").stdout
        for line in out.splitlines()[1:]:  # REF TYPE DIGEST SIZE PLATFORMS LABELS
            fields = line.split()
            if len(fields) >= 3 and fields[0] == ref:
                return fields[2]
        raise ContainerdError(f"{ref} not found in namespace {self.namespace}: {self.images()}")

    def content_digests(self) -> set[str]:
        """Digests of every blob in the content store (manifests, configs, layers)."""
        out = self.run_ctr("content", "ls", "-q").stdout
        return {line.strip() for line in out.splitlines() if line.strip()}

    # -- internals -------------------------------------------------------------------

    def _config(self) -> str:
        disabled = ",\n".join(f"  {_toml_str(p)}" for p in DISABLED_PLUGINS)
        return (
            "version = 2\n"
            f"root = {_toml_str(self._dir / 'root')}\n"
            f"state = {_toml_str(self._dir / 'state')}\n"
            "oom_score = 0\n"
            f"disabled_plugins = [\n{disabled},\n]\n\n"
            "[grpc]\n"
            f"  address = {_toml_str(self.address)}\n\n"
            "[ttrpc]\n"
            f"  address = {_toml_str(self.address + '.ttrpc')}\n\n"
            "[debug]\n"
            '  address = ""\n'
            '  level = "info"\n\n'
            "[metrics]\n"
            '  address = ""\n\n'
            "[cgroup]\n"
            '  path = ""\n'
        )

    def _spawn(self) -> None:
        argv = [self.binary, "--config", str(self.config_path)]
        self._proc, self._log = daemon.start(argv, self.log_path, self._dir)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        last = ""
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise ContainerdStartError(
                    f"containerd exited with {self._proc.returncode}:\n{self.log_tail()}"
                )
            if os.path.exists(self.address):
                try:
                    probe = subprocess.run(
                        [self.ctr, "--address", self.address, "version"],
                        capture_output=True,
                        text=True,
                        timeout=2,
                        stdin=subprocess.DEVNULL,
                    )
                    if probe.returncode == 0:
                        return
                    last = _tail(probe.stderr, 5)
                except subprocess.TimeoutExpired:
                    last = "ctr version timed out"
            if time.monotonic() > deadline:
                raise ContainerdStartError(
                    f"containerd not ready on {self.address} after {self.startup_timeout}s"
                    f" ({last or 'no socket'}):\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        log, self._log = self._log, None
        daemon.stop(proc, log)


def _unmount_under(root: Path) -> None:
    """Detach any mount left below ``root`` (deepest first) so rmtree cannot cross into it.

    The native snapshotter only bind-mounts briefly while unpacking; this is a safety
    net for a daemon killed mid-unpack.
    """
    prefix = str(root.resolve()) + "/"
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return
    points = []
    for line in lines:
        fields = line.split()
        if len(fields) > 4:
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[4])  # \040 = space
            if point.startswith(prefix):
                points.append(point)
    libc = ctypes.CDLL(None, use_errno=True)
    for point in sorted(points, key=len, reverse=True):
        libc.umount2(point.encode(), _MNT_DETACH)


@atexit.register
def _stop_all() -> None:
    for running in list(_live):
        with contextlib.suppress(Exception):
            running.stop()
