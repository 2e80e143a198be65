"""The skopeo subprocess: argv building, credentials by file, error mapping, retries.

Measured on this kind of machine: skopeo 1.9.3 gives up on a single 503 while
reading a manifest-list child despite ``--retry-times``, so mirrorkit retries
the whole invocation itself, within bounds. Credentials never appear on
skopeo's command line: they go into a private temporary auth file whose path is
the only thing passed. TLS is verified with the same CAs as mirrorkit's own
client (``--ca-cert``, ``certs.d``): ``cert_dirs`` hands them to skopeo.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from mirrorkit import interrupt
from mirrorkit.errors import AuthError, DiskFullError, InputError, NotFoundError, RegistryError
from mirrorkit.oci.credentials import Credentials, CredentialStore

if TYPE_CHECKING:
    from mirrorkit.oci.transport import Endpoints

SKOPEO = "skopeo"
PERMANENT = ("manifest unknown", "unauthorized", "authentication required", "denied",
             "not found", "name unknown", "invalid reference", "requested access to the resource")


def skopeo_path() -> str:
    path = shutil.which(SKOPEO)
    if not path:
        raise InputError("skopeo is not installed: run 'make setup' or 'apt-get install skopeo'")
    return path


def _entry(creds: Credentials) -> dict[str, str]:
    if creds.identity_token:
        # containers/image skips an entry without a decodable "auth": docker's "<token>:" form
        return {"auth": base64.b64encode(b"<token>:").decode(), "identitytoken": creds.identity_token}
    return {"auth": base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()}


@contextlib.contextmanager
def auth_file(credentials: CredentialStore, hosts: dict[str, str]) -> Iterator[str | None]:
    """A 0600 auth.json in a private temporary folder, for ``network host -> registry name``.

    ``hosts`` maps the host skopeo will contact (an endpoint override such as
    ``127.0.0.1:5001``) to the registry whose credentials apply (``nvcr.io``).
    """
    auths = {}
    for network_host, registry in hosts.items():
        creds = credentials.get(registry) or credentials.get(network_host)
        if creds:
            auths[network_host] = _entry(creds)
        # namespaced logins (podman login HOST/team): skopeo matches them most specific first too
        for namespace, found in credentials.namespaces(registry).items():
            auths[f"{network_host}/{namespace}"] = _entry(found)
    if not auths:
        yield None
        return
    folder = tempfile.mkdtemp(prefix="mirrorkit-auth-")
    path = os.path.join(folder, "auth.json")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"auths": auths}, fh)
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def cert_dirs(endpoints: Endpoints, hosts: dict[str, str]) -> Iterator[dict[str, str]]:
    """``network host -> folder holding ca.crt`` for skopeo's ``--src/--dest-cert-dir``.

    skopeo only knows /etc/containers/certs.d (and its own ``--cert-dir``), so
    without this a registry trusted through ``--ca-cert`` or ``--certs-dir`` fails
    verification inside skopeo. One temporary folder per TLS-verified host, so a
    host's certs.d CA is trusted for that host only; hosts with no extra CA get
    none (skopeo then keeps its defaults).
    """
    dirs: dict[str, str] = {}
    root: str | None = None
    try:
        for network_host, registry in hosts.items():
            files = endpoints.ca_files(registry)
            if not files:
                continue
            root = root or tempfile.mkdtemp(prefix="mirrorkit-certs-")
            folder = os.path.join(root, network_host.replace("/", "_"))
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, "ca.crt"), "wb") as out:
                for path in files:
                    out.write(path.read_bytes().rstrip(b"\n") + b"\n")
            # --src-cert-dir replaces skopeo's certs.d lookup: keep a certs.d client certificate
            # (*.cert + *.key) usable by linking it (never copying a key)
            for base in endpoints.certs_dirs:
                for path in sorted((base / network_host).glob("*")):
                    link = os.path.join(folder, path.name)
                    if path.suffix in (".cert", ".key") and not os.path.lexists(link):
                        os.symlink(path.resolve(), link)
            dirs[network_host] = folder
        yield dirs
    finally:
        if root:
            shutil.rmtree(root, ignore_errors=True)


def copy_argv(src: str, dest: str, *, all_images: bool = True, src_insecure: bool = False,
              dest_insecure: bool = False, authfile: str | None = None,
              ca_dir: str | None = None, dest_shared_blob_dir: str | None = None,
              src_cert_dir: str | None = None, dest_cert_dir: str | None = None) -> list[str]:
    """skopeo copy's argv: digests preserved, multi-arch kept, never a secret.

    ``ca_dir`` applies to both sides; ``src_cert_dir``/``dest_cert_dir`` to one
    (source and destination may trust different CAs, see ``cert_dirs``).
    """
    src_cert_dir, dest_cert_dir = src_cert_dir or ca_dir, dest_cert_dir or ca_dir
    argv = [SKOPEO, "--insecure-policy", "copy", "--preserve-digests", "--retry-times", "2"]
    if all_images:
        argv.append("--all")
    if src.startswith("docker://"):
        argv.append(f"--src-tls-verify={'false' if src_insecure else 'true'}")
        if authfile:
            argv += ["--src-authfile", authfile]
        if src_cert_dir and not src_insecure:
            argv += ["--src-cert-dir", src_cert_dir]
    if dest.startswith("docker://"):
        argv.append(f"--dest-tls-verify={'false' if dest_insecure else 'true'}")
        if authfile:
            argv += ["--dest-authfile", authfile]
        if dest_cert_dir and not dest_insecure:
            argv += ["--dest-cert-dir", dest_cert_dir]
    if dest_shared_blob_dir:
        argv += ["--dest-shared-blob-dir", dest_shared_blob_dir]
    argv += [src, dest]
    return argv


def _last_error(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for line in reversed(lines):
        if 'msg="' in line:
            return line.split('msg="', 1)[1].rstrip('"').replace('\\"', '"')
    return lines[-1] if lines else "no error output"


def run_copy(argv: list[str], what: str, attempts: int = 3, backoff: float = 1.0,
             timeout: float = 3600.0, secrets: list[str] | None = None) -> None:
    """Run one skopeo copy, retrying transient failures; raise a one-line error otherwise."""
    argv = [skopeo_path(), *argv[1:]]
    message = ""
    for attempt in range(1, attempts + 1):
        interrupt.check()              # skopeo dies with Ctrl-C too: that is no reason to try again
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired:
            message = f"skopeo timed out after {timeout:.0f} s"
            continue
        if proc.returncode == 0:
            return
        interrupt.check()
        message = _last_error(proc.stderr)
        for secret in secrets or ():
            message = message.replace(secret, "***")
        lowered = message.lower()
        if "no space left on device" in lowered:      # final: mapped to one line by files.full_disk_reported
            raise DiskFullError(f"{what}: {message}")
        # a certificate refused is not transient: say so at once instead of retrying for seconds
        if ("x509: " in lowered or "tls: " in lowered) and "timeout" not in lowered:
            raise RegistryError(f"{what}: TLS verification failed: {message}; trust its CA with --ca-cert "
                                "or --certs-dir, or name the registry with --insecure")
        if any(p in lowered for p in PERMANENT):
            if "unauthorized" in lowered or "authentication" in lowered or "denied" in lowered:
                raise AuthError(f"{what}: {message}")
            raise NotFoundError(f"{what}: {message}")
        if attempt < attempts:
            time.sleep(backoff * 2 ** (attempt - 1))
    raise RegistryError(f"{what}: {message} (gave up after {attempts} attempts)")


