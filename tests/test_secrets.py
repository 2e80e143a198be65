"""A known password never shows: not in output, not in files, not on any command line.

Every registry command runs against real loopback registries protected two ways —
htpasswd (basic auth, ``docker-registry``) and a bearer-token service
(``testkit.tokenauth``) — once with each on the source side and the other on the
destination side, at default verbosity, with the password in an auth file and on
standard input. Then the password (and the base64 forms auth files hold) is
searched for in each command's stdout and stderr, in every file the commands
wrote (plan, lock, bundle tar, .sha256, inventory), and in ``/proc/*/cmdline`` of
every process, sampled every ~10 ms while pull-bundle and mirror run skopeo.
skopeo's temporary auth file must be private while it exists and gone afterwards.
The same holds for a secret a ``docker-credential-*`` helper hands over and for a
stored ``identitytoken`` (exchanged by mirrorkit and by skopeo as a refresh token).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from kit.images import Image, Index, make_image, make_index, make_layer
from kit.push import push_image
from kit.tokenauth import TokenAuthProxy

from mirrorkit.cli.main import main

# unique per run: other test sessions on this machine must not be able to trip the search
KNOWN = f"Zq9-known-SECRET-7731-{secrets.token_hex(4)}"
BASIC_USER, TOKEN_USER = "alice", "$oauthtoken"
PREFIX = "kse"


def build() -> dict[str, Image | Index]:
    base = make_layer("secrets/base", 16 << 10)
    return {
        "nvidia/gpu-operator:v1": make_index([
            make_image(f"s/{a}", [base, make_layer(f"s/{a}", 8 << 10)], ("linux", a)) for a in ("amd64", "arm64")]),
        "nvidia/k8s-driver-manager:v1": make_image("s/dm", [base, make_layer("s/dm", 4 << 10)]),
    }


IMAGES = build()


def b64(text: str) -> bytes:
    return base64.b64encode(text.encode())


def needles(secret: str) -> list[bytes]:
    """The secret, and every way base64 could carry it (three alignments, and user:secret)."""
    raw = secret.encode()
    out = [raw, b64(f"{BASIC_USER}:{secret}"), b64(f"{TOKEN_USER}:{secret}")]
    for k in range(3):
        enc = base64.b64encode(b"\0" * k + raw)
        out.append(enc[-(-k // 3) * 4:((k + len(raw)) // 3) * 4])  # the chars only the secret decides
    return out


NEEDLES = needles(KNOWN)


def leaks(data: bytes) -> list[bytes]:
    return [n for n in NEEDLES if n in data]


def _ppid(pid: str) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return int(fh.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


class ProcWatch:
    """Samples /proc/*/cmdline of every process (and the temp auth folders) in a thread."""

    def __init__(self, tmpdir: Path, interval: float = 0.01, limit: float = 120.0) -> None:
        self.tmpdir, self.interval, self.limit = tmpdir, interval, limit
        self.hits: list[bytes] = []
        self.skopeo: list[list[str]] = []
        self.auth_modes: set[tuple[int, int]] = set()
        self.samples = 0
        self.me = os.getpid()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="proc-watch", daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit
        while not self._stop.is_set() and time.monotonic() < deadline:
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit():
                    continue
                try:
                    with open(f"/proc/{entry.name}/cmdline", "rb") as fh:
                        data = fh.read()
                except OSError:
                    continue
                if leaks(data):
                    self.hits.append(data)
                argv = [a.decode(errors="replace") for a in data.split(b"\0") if a]
                if argv and argv[0].endswith("skopeo") and argv not in self.skopeo and _ppid(entry.name) == self.me:
                    self.skopeo.append(argv)  # ours only: other sessions run skopeo on this machine too
            for folder in self.tmpdir.glob("mirrorkit-auth-*"):
                try:
                    modes = (stat.S_IMODE(folder.stat().st_mode), stat.S_IMODE((folder / "auth.json").stat().st_mode))
                except OSError:
                    continue
                self.auth_modes.add(modes)
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> ProcWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@dataclass
class Layout:
    """Where the images come from (as nvcr.io) and go to, each with its user."""

    name: str
    source: str
    source_user: str
    dest: str
    dest_user: str
    proxies: list[TokenAuthProxy] = field(default_factory=list)


@pytest.fixture(params=["token-source/htpasswd-dest", "htpasswd-source/token-dest"])
def layout(request: pytest.FixtureRequest, registry_factory) -> Iterator[Layout]:
    if request.param.startswith("token"):
        up = registry_factory()
        for name, content in IMAGES.items():
            push_image(up.url, *name.split(":"), content)
        front = TokenAuthProxy(up.url, KNOWN, username=TOKEN_USER).start()
        dest = registry_factory(users={BASIC_USER: KNOWN})
        lay = Layout(request.param, front.host, TOKEN_USER, dest.host, BASIC_USER, [front])
    else:
        up = registry_factory(users={BASIC_USER: KNOWN})
        for name, content in IMAGES.items():
            push_image(up.url, *name.split(":"), content, auth=(BASIC_USER, KNOWN))
        front = TokenAuthProxy(registry_factory().url, KNOWN, username=TOKEN_USER).start()
        lay = Layout(request.param, up.host, BASIC_USER, front.host, TOKEN_USER, [front])
    yield lay
    for proxy in lay.proxies:
        proxy.stop()


def test_the_password_never_shows(layout: Layout, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tmpdir, out, home, secrets_dir = (tmp_path / d for d in ("tmp", "out", "home", "secrets"))
    for d in (tmpdir, out, home, secrets_dir):
        d.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))  # gettempdir() caches its first answer
    monkeypatch.setenv("HOME", str(home))
    for var in ("XDG_RUNTIME_DIR", "DOCKER_CONFIG", "MIRRORKIT_CERTS_DIR"):
        monkeypatch.delenv(var, raising=False)
    auth = secrets_dir / "auth.json"  # outside out/: the one file that holds the password on purpose
    auth.write_text(json.dumps({"auths": {
        "nvcr.io": {"auth": b64(f"{layout.source_user}:{KNOWN}").decode()},
        layout.dest: {"auth": b64(f"{layout.dest_user}:{KNOWN}").decode()},
    }}))
    auth.chmod(0o600)
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth))

    # canaries: the search finds the password where it is on purpose (the auth file, a command line)
    assert leaks(auth.read_bytes())
    with ProcWatch(tmpdir) as canary:
        subprocess.run([sys.executable, "-c", "import time; time.sleep(0.2)", KNOWN], check=True)
    assert canary.hits

    runs: list[tuple[str, Result]] = []

    def run(*args: object, expect: int = 0, password: str | None = None) -> Result:
        extra = ["--username", layout.dest_user, "--password-stdin"] if password else []
        res = CliRunner().invoke(main, [str(a) for a in args] + extra,
                                 input=f"{password}\n" if password else None, catch_exceptions=False)
        assert res.exit_code == expect, res.output
        runs.append((str(args[0]), res))
        return res

    src = ("--source-endpoint", f"nvcr.io=http://{layout.source}")
    dest = ("--insecure", layout.dest)
    plan, bundle = out / "plan.yaml", out / "gpu.tar"

    run("plan", "--registry", f"{layout.dest}/{PREFIX}", "--resolve", *src,
        *[a for ref in IMAGES for a in ("--image", f"nvcr.io/{ref}")], "-o", plan)
    with ProcWatch(tmpdir) as pull_watch:
        run("pull-bundle", plan, "-o", bundle, *src)
    run("push-bundle", bundle, "--registry", f"{layout.dest}/{PREFIX}", *dest, password=KNOWN)
    run("verify", plan, *dest)
    run("verify", bundle, "--registry", f"{layout.dest}/{PREFIX}", *dest, password=KNOWN)
    with ProcWatch(tmpdir) as mirror_watch:
        run("mirror", plan, "--registry", f"{layout.dest}/mirror", *src, *dest, password=KNOWN)
    run("inventory", "--registry", f"{layout.dest}/{PREFIX}", *dest, "-o", out / "inventory.json")
    # refused credentials (a wrong password that contains the right one) are not echoed either
    wrong = run("verify", plan, "--registry", f"{layout.dest}/{PREFIX}", *dest, expect=1, password=KNOWN + "-x")
    assert "refused" in wrong.stderr

    # 1. what the commands printed
    for name, res in runs:
        assert not leaks(res.stdout.encode()) and not leaks(res.stderr.encode()), f"{name} printed the password"
    # 2. every file they wrote
    written = [p for p in out.rglob("*") if p.is_file()]
    assert {p.name for p in written} >= {"plan.yaml", "gpu.tar", "gpu.tar.sha256", "gpu.lock.yaml",
                                         "inventory.json"}
    for path in written:
        assert not leaks(path.read_bytes()), f"{path.name} holds the password"
    # 3. every command line while pull-bundle and mirror ran: no child process carries credentials
    # (no copy path runs skopeo any more), and none of the process tree's argv shows the password
    for watch in (pull_watch, mirror_watch):
        assert watch.samples >= 1 and watch.skopeo == [] and watch.hits == []
    # 4. and nothing left behind in the temp folder
    assert not list(tmpdir.glob("mirrorkit-auth-*")) and not list(tmpdir.glob("mirrorkit-certs-*"))
    # the token service saw the password; the registry endpoints only ever saw tokens
    for proxy in layout.proxies:
        assert {s.auth_scheme for s in proxy.seen if not s.path.startswith("/token")} <= {None, "Bearer"}
        assert sum(proxy.tokens_issued.values()) >= 1


def test_helper_and_identity_token_secrets_never_show(tmp_path: Path, registry_factory,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A docker-credential helper's secret and a stored identity token: same discipline as a password."""
    tmpdir, out, home, bin_dir = (tmp_path / d for d in ("tmp", "out", "home", "bin"))
    for d in (tmpdir, out, home, bin_dir):
        d.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(home))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    for var in ("REGISTRY_AUTH_FILE", "DOCKER_CONFIG", "XDG_CONFIG_HOME", "MIRRORKIT_CERTS_DIR"):
        monkeypatch.delenv(var, raising=False)
    up = registry_factory()
    for name, content in IMAGES.items():
        push_image(up.url, *name.split(":"), content)
    front = TokenAuthProxy(up.url, "not-this-one", refresh_token=KNOWN).start()
    dest = registry_factory(users={BASIC_USER: KNOWN})
    helper = bin_dir / "docker-credential-mksecret"
    helper.write_text("#!/bin/sh\nread server\n"
                      f"printf '%s' '{{\"ServerURL\":\"'\"$server\"'\",\"Username\":\"{BASIC_USER}\","
                      f"\"Secret\":\"{KNOWN}\"}}'\n")
    helper.chmod(0o700)
    (home / ".docker").mkdir()
    (home / ".docker" / "config.json").write_text(json.dumps({
        "auths": {"nvcr.io": {"identitytoken": KNOWN}}, "credHelpers": {dest.host: "mksecret"}}))
    results: list[Result] = []

    def run(*args: object, input: str | None = None) -> Result:
        res = CliRunner().invoke(main, [str(a) for a in args], input=input, catch_exceptions=False)
        assert res.exit_code == 0, res.output
        results.append(res)
        return res

    src = ("--source-endpoint", f"nvcr.io=http://{front.host}")
    plan, bundle = out / "plan.yaml", out / "gpu.tar"
    try:
        with ProcWatch(tmpdir) as watch:
            run("plan", "--registry", f"{dest.host}/{PREFIX}", "--resolve", *src,
                *[a for ref in IMAGES for a in ("--image", f"nvcr.io/{ref}")], "-o", plan)
            run("pull-bundle", plan, "-o", bundle, *src)
            run("push-bundle", bundle, "--insecure", dest.host)
            run("login", dest.host, "-u", BASIC_USER, "--password-stdin", "--insecure",
                "--authfile", tmp_path / "login" / "auth.json", input=KNOWN + "\n")
        assert front.refresh_grants >= 2  # mirrorkit's client and skopeo both exchanged the identity token
    finally:
        front.stop()
    assert watch.samples >= 10 and watch.hits == []
    for res in results:
        assert not leaks(res.stdout.encode()) and not leaks(res.stderr.encode())
    for path in (p for p in out.rglob("*") if p.is_file()):
        assert not leaks(path.read_bytes()), f"{path.name} holds the secret"
    assert not list(tmpdir.glob("mirrorkit-auth-*"))
