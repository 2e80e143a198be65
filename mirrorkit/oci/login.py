"""``mirrorkit login``: check a user and password against a registry, then store them as podman does.

For hosts without podman or docker (the air-gapped side is often a bare
jump host). The login is verified first (``GET /v2/`` through whatever
challenge the registry makes: basic, or a token service), so a typo is found
now rather than mid-push. The entry goes into the containers auth file —
``--authfile``, else the first writable location of containers-auth.json(5)
(``$REGISTRY_AUTH_FILE``, ``$XDG_RUNTIME_DIR/containers/auth.json`` or
``/run/containers/$UID/auth.json``, ``$XDG_CONFIG_HOME/containers/auth.json``) —
written atomically with mode 0600, other entries kept.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from mirrorkit.errors import InputError
from mirrorkit.files import check_target, write_atomic
from mirrorkit.oci.client import RegistryClient
from mirrorkit.oci.credentials import Credentials, CredentialStore, auth_sources, normalize_key
from mirrorkit.oci.transport import Endpoints
from mirrorkit.refs import check_host


def login_key(target: str) -> tuple[str, str]:
    """``HOST[:PORT][/NAMESPACE]`` -> (host, auth-file key); a namespace scopes the login (podman login HOST/team)."""
    if "://" in target:
        raise InputError(f"login {target!r}: give HOST[:PORT][/NAMESPACE] without a scheme "
                         "(use --insecure for plain HTTP)")
    key = normalize_key(target)
    host = key.split("/", 1)[0]
    if not host or any(not part for part in key.split("/")):
        raise InputError(f"login {target!r}: expected HOST[:PORT][/NAMESPACE]")
    check_host(host, "registry")
    return host, key


def _writable(path: Path) -> bool:
    try:
        check_target(path, "auth file")
    except InputError:
        return False
    return True


def default_auth_file() -> Path:
    """Where podman login would write: the first writable containers auth file of the lookup order
    (``$REGISTRY_AUTH_FILE``, then the ``containers/auth.json`` files; never docker's own files)."""
    env = os.environ.get("REGISTRY_AUTH_FILE")
    candidates = [s.path for s in auth_sources() if (env and s.path == Path(env)) or s.path.name == "auth.json"]
    for path in candidates:
        if _writable(path):
            return path
    raise InputError(f"no writable place for the auth file (tried {', '.join(map(str, candidates))}); "
                     "give --authfile")


def verify_login(host: str, creds: Credentials, endpoints: Endpoints) -> bool:
    """True when the registry checked the credentials and took them; False when it never asked.

    A refusal raises AuthError (exit 1), in one line without the password.
    """
    with RegistryClient(endpoints, CredentialStore({host: creds}, files=[])) as client:
        client.request(host, "GET", "/v2/")
        return client.authenticated(host)


def save_login(path: Path, key: str, creds: Credentials) -> None:
    """Add or replace one ``auths`` entry, keeping the rest of the file as it was."""
    data: dict = {}
    if path.exists():
        try:
            data = json.loads(path.read_text() or "{}")
        except (OSError, ValueError, UnicodeDecodeError):
            raise InputError(f"{path}: not a readable JSON auth file; fix or remove it") from None
        if not isinstance(data, dict) or not isinstance(data.setdefault("auths", {}), dict):
            raise InputError(f"{path}: not a containers auth file (expected an 'auths' mapping)")
    auths = data.setdefault("auths", {})
    for other in [k for k in auths if k != key and normalize_key(k) == key]:
        del auths[other]  # https://HOST/v1/ and HOST are one login: keep one entry
    auths[key] = {"auth": base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()}
    write_atomic(path, json.dumps(data, indent=1) + "\n", "auth file", mode=0o600)


def login(target: str, creds: Credentials, endpoints: Endpoints, authfile: Path | None = None) -> tuple[Path, bool]:
    """Verify, then store; returns the file written and whether the registry checked the login."""
    host, key = login_key(target)
    if not creds.username or not creds.password:
        raise InputError("login needs a username and a password")
    path = authfile or default_auth_file()
    checked = verify_login(host, creds, endpoints)
    save_login(path, key, creds)
    return path, checked
