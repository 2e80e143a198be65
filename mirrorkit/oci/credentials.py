"""Registry credentials from the places users already keep them.

The lookup follows containers-auth.json(5) and docker, so that whatever
``podman login``, ``skopeo login`` or ``docker login`` wrote on this host works
here too. Files, in order (the first that has an answer wins):

1. ``$REGISTRY_AUTH_FILE``
2. ``$XDG_RUNTIME_DIR/containers/auth.json`` (``/run/containers/$UID/auth.json``
   without ``XDG_RUNTIME_DIR``: where a root ``podman login`` writes)
3. ``$XDG_CONFIG_HOME/containers/auth.json`` (``~/.config`` by default)
4. ``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``
5. ``~/.dockercfg`` (the legacy format: the ``auths`` map at the top level)

Within a file, keys match from the most specific namespace to the host: for
``HOST/a/b/c`` the keys ``HOST/a/b/c``, ``HOST/a/b``, ``HOST/a``, ``HOST`` (a
``podman login HOST/team`` applies to ``HOST/team/...`` only). ``credHelpers``
(per host) and ``credsStore`` (every host) run ``docker-credential-NAME get``
per the docker-credential-helpers protocol: the server on stdin, JSON on stdout.
A helper's output is a secret: it is never logged nor put in an error. An
``identitytoken`` (docker's stored OAuth2 refresh token) is kept apart from
passwords: the client exchanges it at the token service.

Secrets live only in ``Credentials`` objects whose repr hides them.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

from mirrorkit.errors import AuthError

DOCKER_HUB = "docker.io"
DOCKER_HUB_ALIASES = ("index.docker.io", "registry-1.docker.io", "registry.hub.docker.com")
DOCKER_HUB_SERVER = "https://index.docker.io/v1/"  # the server name docker hands helpers for Docker Hub
HELPER_TIMEOUT = 10.0   # one wait for a helper's answer: a hanging helper costs this once per run
HELPER_NOT_FOUND = "credentials not found"


@dataclass(frozen=True)
class Credentials:
    """A user and a secret; ``identity_token`` is a refresh token, used instead of the password."""

    username: str
    password: str = field(repr=False)
    identity_token: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        kind = "identity_token" if self.identity_token else "password"
        return f"Credentials(username={self.username!r}, {kind}=***)"

    def secrets(self) -> list[str]:
        return [s for s in (self.password, self.identity_token) if s]


@dataclass(frozen=True)
class AuthSource:
    """One file in the lookup order; ``legacy`` is ``~/.dockercfg``'s older layout."""

    path: Path
    legacy: bool = False


def _home() -> Path:
    return Path(os.environ.get("HOME") or Path.home())


def runtime_auth_file() -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "containers" / "auth.json"
    return Path("/run/containers") / str(os.getuid()) / "auth.json"


def config_auth_file() -> Path:
    config = os.environ.get("XDG_CONFIG_HOME")
    return (Path(config) if config else _home() / ".config") / "containers" / "auth.json"


def auth_sources() -> list[AuthSource]:
    """Every file looked at, in the order of containers-auth.json(5) then docker."""
    out: list[AuthSource] = []
    if os.environ.get("REGISTRY_AUTH_FILE"):
        out.append(AuthSource(Path(os.environ["REGISTRY_AUTH_FILE"])))
    out.append(AuthSource(runtime_auth_file()))
    out.append(AuthSource(config_auth_file()))
    docker_dir = Path(os.environ["DOCKER_CONFIG"]) if os.environ.get("DOCKER_CONFIG") else _home() / ".docker"
    out.append(AuthSource(docker_dir / "config.json"))
    out.append(AuthSource(_home() / ".dockercfg", legacy=True))
    return out


def auth_file_candidates() -> list[Path]:
    return [s.path for s in auth_sources()]


def normalize_key(key: str) -> str:
    """``https://index.docker.io/v1/`` -> ``docker.io``; ``http://HOST/ns/`` -> ``HOST/ns``."""
    key = key.strip()
    for scheme in ("https://", "http://"):
        if key.lower().startswith(scheme):
            key = key[len(scheme):]
            if key.rstrip("/").endswith(("/v1", "/v2")):  # docker's legacy full server URLs
                key = key.rstrip("/")[:-3]
    key = key.rstrip("/")
    host, sep, rest = key.partition("/")
    host = host.lower()
    if host in DOCKER_HUB_ALIASES:
        host = DOCKER_HUB
    return host + sep + rest


def lookup_keys(host: str, repository: str | None) -> list[str]:
    """``HOST/a/b``, ``HOST/a``, ``HOST``: most specific first."""
    host = normalize_key(host)
    keys = []
    parts = (repository or "").strip("/").split("/") if repository else []
    for n in range(len(parts), 0, -1):
        keys.append(f"{host}/{'/'.join(parts[:n])}")
    keys.append(host)
    return keys


def decode_entry(entry: object) -> Credentials | None:
    """One ``auths`` value: ``auth`` (base64 user:password), or username/password, or identitytoken."""
    if not isinstance(entry, dict):
        return None
    token = entry.get("identitytoken")
    token = token if isinstance(token, str) and token else None
    user, password = "", ""
    if isinstance(entry.get("auth"), str) and entry["auth"]:
        try:
            raw = base64.b64decode(entry["auth"], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, sep, password = raw.partition(":")
        if not sep:
            return None
    elif isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
        user, password = entry["username"], entry["password"]
    if token:
        return Credentials(user or "<token>", "", token)
    return Credentials(user, password) if user else None


def run_helper(name: str, server: str) -> Credentials | None:
    """``docker-credential-NAME get``; None when the helper holds nothing for the server.

    The server goes on stdin (never argv); stdout holds the secret and is only parsed.
    """
    program = f"docker-credential-{name}"
    path = shutil.which(program)
    if path is None:
        raise AuthError(f"credential helper {program} (for {server}) is not on PATH")
    # its own session (process group): on a timeout the helper and every child it started are killed
    try:
        proc = subprocess.Popen([path, "get"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
    except OSError as exc:
        raise AuthError(f"credential helper {program} failed for {server}: {exc.strerror or exc}") from None
    try:
        stdout, stderr = proc.communicate(server, timeout=HELPER_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AuthError(f"credential helper {program} gave no answer for {server} within {HELPER_TIMEOUT:.0f} s; "
                        "stopped it and every process it started") from None
    if proc.returncode != 0:
        if HELPER_NOT_FOUND in (stdout + stderr).lower():
            return None
        raise AuthError(f"credential helper {program} failed for {server} (exit {proc.returncode})")
    try:
        doc = json.loads(stdout)
        user, secret = doc["Username"], doc["Secret"]
    except (ValueError, KeyError, TypeError):
        raise AuthError(f"credential helper {program} answered {server} with something other than "
                        "its JSON ({\"Username\", \"Secret\"})") from None
    if not isinstance(user, str) or not isinstance(secret, str) or not secret:
        return None
    if user == "<token>":  # docker's convention: the secret is an identity (refresh) token
        return Credentials(user, "", secret)
    return Credentials(user, secret)


@dataclass
class _Parsed:
    auths: dict[str, object] = field(default_factory=dict)
    helpers: dict[str, str] = field(default_factory=dict)
    store: str | None = None
    state: str = "ok"  # ok | missing | unreadable


def _parse(source: AuthSource) -> _Parsed:
    try:
        data = json.loads(source.path.read_text())
    except FileNotFoundError:
        return _Parsed(state="missing")
    except (OSError, ValueError, UnicodeDecodeError):
        return _Parsed(state="unreadable")
    if not isinstance(data, dict):
        return _Parsed(state="unreadable")
    auths = data if source.legacy else data.get("auths")
    out = _Parsed()
    if isinstance(auths, dict):
        out.auths = {normalize_key(str(k)): v for k, v in auths.items()}
    if isinstance(data.get("credHelpers"), dict) and not source.legacy:
        out.helpers = {normalize_key(str(k)): str(v) for k, v in data["credHelpers"].items()
                       if isinstance(v, str) and v}
    if isinstance(data.get("credsStore"), str) and data["credsStore"] and not source.legacy:
        out.store = data["credsStore"]
    return out


def _server(host: str) -> str:
    return DOCKER_HUB_SERVER if host == DOCKER_HUB else host


class CredentialStore:
    """Credentials per registry host and repository: explicit ones first, then the auth files."""

    def __init__(self, explicit: dict[str, Credentials] | None = None,
                 files: list[Path] | None = None) -> None:
        self.explicit = dict(explicit or {})
        self.sources = [AuthSource(p) for p in files] if files is not None else auth_sources()
        self._found: dict[tuple[str, str], Credentials | None] = {}
        self._lock = threading.Lock()
        self._helped: dict[tuple[str, str], Credentials | AuthError | None] = {}
        self.aliases: dict[str, str] = {}   # registry name -> the host it is reached at (--source-endpoint)

    def alias(self, name: str, host: str) -> None:
        """``name`` (``nvcr.io``) is reached at ``host`` (a mirror, ``127.0.0.1:5001``): when nothing is
        stored under the name, the credentials stored under the host are used (what ``login HOST`` saved)."""
        if host != name:
            self.aliases[name] = host

    @property
    def files(self) -> list[Path]:
        return [s.path for s in self.sources]

    def get(self, host: str, repository: str | None = None) -> Credentials | None:
        """The credentials for ``host/repository`` (or the host alone), looked up once."""
        if host in self.explicit:
            return self.explicit[host]
        key = (host, repository or "")
        with self._lock:
            if key not in self._found:
                found = self._lookup(host, repository)
                alias = self.aliases.get(host)
                if found is None and alias is not None:
                    found = self.explicit.get(alias) or self._lookup(alias, repository)
                self._found[key] = found
            return self._found[key]

    def _lookup(self, host: str, repository: str | None) -> Credentials | None:
        keys = lookup_keys(host, repository)
        for source in self.sources:
            parsed = _parse(source)
            if parsed.state != "ok":
                continue
            if keys[-1] in parsed.helpers:  # credHelpers are per host, and win within their file
                creds = self._helper(parsed.helpers[keys[-1]], _server(keys[-1]))
                if creds:
                    return creds
                continue
            for key in keys:
                creds = decode_entry(parsed.auths.get(key))
                if creds:
                    return creds
            if parsed.store:
                creds = self._helper(parsed.store, _server(keys[-1]))
                if creds:
                    return creds
        return None

    def _helper(self, name: str, server: str) -> Credentials | None:
        """A helper is asked once per server and run: every repository of a registry gets the same answer,
        and a helper that failed or hung is not asked (nor waited for) again."""
        key = (name, server)
        if key not in self._helped:
            try:
                self._helped[key] = run_helper(name, server)
            except AuthError as exc:
                self._helped[key] = exc
        answer = self._helped[key]
        if isinstance(answer, AuthError):
            raise AuthError(str(answer))
        return answer

    def explain(self, host: str, repository: str | None = None) -> str:
        """What was looked at for this host, and what each place held: for "requires credentials"."""
        if host in self.explicit:
            return "looked at: --username/--password-stdin"
        keys = lookup_keys(host, repository)
        hostkey = keys[-1]
        notes = []
        for source in self.sources:
            parsed = _parse(source)
            if parsed.state != "ok":
                notes.append(f"{source.path} ({parsed.state})")
                continue
            if hostkey in parsed.helpers:
                helper = parsed.helpers[hostkey]
                notes.append(f"{source.path} (helper docker-credential-{helper}: nothing for {hostkey})")
                continue
            near = sorted(k for k in parsed.auths if k == hostkey or k.startswith(hostkey + "/"))
            if near:
                what = "no usable entry" if any(k in keys for k in near) else "other namespaces only"
                notes.append(f"{source.path} ({what}: {', '.join(near)})")
            else:
                notes.append(f"{source.path} (no entry for {hostkey})")
            if parsed.store:
                notes[-1] = notes[-1][:-1] + f"; credsStore docker-credential-{parsed.store}: nothing)"
        return "looked at: " + "; ".join(notes)

    def secrets(self) -> list[str]:
        """Every secret known so far, so output can be checked for leaks."""
        out = [s for c in self.explicit.values() for s in c.secrets()]
        with self._lock:
            out += [s for c in self._found.values() if c for s in c.secrets()]
        return out
