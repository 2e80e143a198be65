"""rewrite-config --format driver-repo: the operator's repoConfig/certConfig for the carried package mirror.

The GPU Operator mounts each key of ``driver.repoConfig.configMapName`` as one file into the driver
pod's ``/etc/apt/sources.list.d`` (Ubuntu) or ``/etc/yum.repos.d`` (RHEL, Rocky), and each key of
``driver.certConfig.name`` into its CA folder. So one ConfigMap holds:

- one key per carried repository (``lock.package_repos``), its repo file with ``@URL@`` replaced by
  ``URL/<os>/<name>``: the distribution's own suites, components and signing keys, never
  ``trusted=yes`` or ``gpgcheck=0``;
- one key named after each default repo file of the driver image (read from its layers in the
  bundle) that would otherwise point at the internet: a key named like a file in the image replaces
  it (gpu-operator #299). apt ignores ``*.repo`` and dnf ignores ``*.sources``/``*.list``, so one
  ConfigMap serves Ubuntu and RHEL pools alike. ``/etc/apt/sources.list`` (Ubuntu 22.04 images) is
  not in ``sources.list.d`` and cannot be replaced this way: that is reported, not hidden.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import yaml

from mirrorkit.errors import InputError
from mirrorkit.lock import Lock
from mirrorkit.oci.httpfile import redact

REPO_CONFIGMAP = "mirrorkit-driver-repos"
CERT_CONFIGMAP = "mirrorkit-driver-ca"
CA_KEY = "mirrorkit-mirror-ca.crt"
DEFAULT_PATTERNS = ("etc/apt/sources.list.d/*", "etc/yum.repos.d/*.repo", "etc/apt/sources.list")
REPLACED = ("# Replaced by mirrorkit (rewrite-config --format driver-repo): this image's default repositories\n"
            "# cannot be reached behind the air gap; the carried mirror's files sit beside this one.\n")


@dataclass
class DriverRepo:
    manifests: str
    values: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)


def _active(text: str) -> bool:
    """Does a repo file enable anything (a line that is neither blank nor a comment)?"""
    return any(ln.strip() and not ln.lstrip().startswith("#") for ln in text.splitlines())


def check_url(url: str) -> str:
    """The mirror's base URL: http(s), a host, no credentials (it ends up in a ConfigMap), no spaces."""
    url = url.strip().rstrip("/")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.username \
            or parts.query or parts.fragment or any(c.isspace() or not c.isprintable() for c in url):
        raise InputError(f"--package-url {redact(url)!r}: expected http(s)://HOST[:PORT][/PATH] (no credentials)")
    return url


def driver_repo(lock: Lock, url: str, ca_pem: str | None, namespace: str,
                image_files: dict[str, dict[str, bytes]], crs: list[dict[str, Any]] | None = None) -> DriverRepo:
    """The ConfigMaps (and NVIDIADriver CRs) as one manifest, plus the Helm values that name them.

    ``image_files``: driver image name -> its files matching ``DEFAULT_PATTERNS`` (``imagefs``).
    ``crs``: the plan's NVIDIADriver resources (already pointing at the mirror, when known).
    """
    if not lock.package_repos:
        raise InputError("the bundle carries no package repositories: pull-bundle --package-source carries them")
    url = check_url(url)
    data: dict[str, str] = {}
    notes: list[str] = []
    for image, files in sorted(image_files.items()):
        for path, content in sorted(files.items()):
            text = content.decode("utf-8", "replace")
            if not _active(text):
                continue
            if path == "etc/apt/sources.list":
                notes.append(f"{image}: /etc/apt/sources.list enables repositories the air gap cannot reach, and "
                             "repoConfig cannot replace it (its keys go to sources.list.d): build the driver "
                             "image with an empty /etc/apt/sources.list, or expect apt-get update to fail")
                continue
            data[path.rsplit("/", 1)[-1]] = REPLACED
    for repo in lock.package_repos:
        base = f"{url}/{repo.os}/{repo.name}"
        data[repo.repo_file] = repo.repo_text.replace("@URL@", base)
    docs: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "ConfigMap",
                                   "metadata": {"name": REPO_CONFIGMAP, "namespace": namespace},
                                   "data": dict(sorted(data.items()))}]
    values: dict[str, Any] = {"driver": {"repoConfig": {"configMapName": REPO_CONFIGMAP}}}
    if ca_pem is not None:
        docs.append({"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": CERT_CONFIGMAP, "namespace": namespace}, "data": {CA_KEY: ca_pem}})
        values["driver"]["certConfig"] = {"name": CERT_CONFIGMAP}
    for original in crs or []:
        doc = copy.deepcopy(original)
        spec = doc.setdefault("spec", {})
        spec["repoConfig"] = {"name": REPO_CONFIGMAP}
        if ca_pem is not None:
            spec["certConfig"] = {"name": CERT_CONFIGMAP}
        docs.append(doc)
    header = (f"# Driver package mirror at {url}: repoConfig ConfigMap"
              + (", certConfig ConfigMap" if ca_pem is not None else "")
              + (f", {len(crs or [])} NVIDIADriver resource(s)" if crs else "") + ".\n")
    text = header + yaml.safe_dump_all(docs, sort_keys=False, width=120, explicit_start=True)
    return DriverRepo(text, values, notes, sorted(data))


def values_overlay(ca: bool) -> dict[str, Any]:
    """The Helm values ``--format helm --package-url`` merges."""
    values: dict[str, Any] = {"driver": {"repoConfig": {"configMapName": REPO_CONFIGMAP}}}
    if ca:
        values["driver"]["certConfig"] = {"name": CERT_CONFIGMAP}
    return values
