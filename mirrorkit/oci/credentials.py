"""Registry credentials from the places users already keep them.

Order: explicit credentials (``--username`` / ``--password-stdin``), then
``$REGISTRY_AUTH_FILE``, ``$XDG_RUNTIME_DIR/containers/auth.json``,
``~/.config/containers/auth.json``, ``$DOCKER_CONFIG/config.json`` or
``~/.docker/config.json`` — the order podman, skopeo and buildah use, so a
``podman login`` or ``docker login`` on the workstation is all it takes.
Secrets live only in ``Credentials`` objects whose repr hides them.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

DOCKER_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io")


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=***)"


def auth_file_candidates() -> list[Path]:
    paths: list[Path] = []
    if os.environ.get("REGISTRY_AUTH_FILE"):
        paths.append(Path(os.environ["REGISTRY_AUTH_FILE"]))
    if os.environ.get("XDG_RUNTIME_DIR"):
        paths.append(Path(os.environ["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    home = Path(os.environ.get("HOME") or Path.home())
    paths.append(home / ".config" / "containers" / "auth.json")
    docker_dir = Path(os.environ["DOCKER_CONFIG"]) if os.environ.get("DOCKER_CONFIG") else home / ".docker"
    paths.append(docker_dir / "config.json")
    return paths


def _keys_for(host: str) -> list[str]:
    keys = [host, f"https://{host}", f"https://{host}/v1/", f"http://{host}"]
    if host in DOCKER_HUB_KEYS:
        keys = list(DOCKER_HUB_KEYS) + keys
    return keys


def _decode(entry: object) -> Credentials | None:
    if not isinstance(entry, dict):
        return None
    if isinstance(entry.get("auth"), str) and entry["auth"]:
        try:
            raw = base64.b64decode(entry["auth"], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, sep, password = raw.partition(":")
        return Credentials(user, password) if sep and user else None
    if isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
        return Credentials(entry["username"], entry["password"])
    return None


def _from_file(path: Path, host: str) -> Credentials | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    auths = data.get("auths") if isinstance(data, dict) else None
    if not isinstance(auths, dict):
        return None
    for key in _keys_for(host):
        creds = _decode(auths.get(key))
        if creds:
            return creds
    return None


class CredentialStore:
    """Credentials per registry host: explicit ones first, then the auth files."""

    def __init__(self, explicit: dict[str, Credentials] | None = None,
                 files: list[Path] | None = None) -> None:
        self.explicit = dict(explicit or {})
        self.files = files if files is not None else auth_file_candidates()

    def get(self, host: str) -> Credentials | None:
        if host in self.explicit:
            return self.explicit[host]
        for path in self.files:
            creds = _from_file(path, host)
            if creds:
                return creds
        return None

    def secrets(self) -> list[str]:
        """Every explicit secret, so output can be checked for leaks."""
        return [c.password for c in self.explicit.values() if c.password]
