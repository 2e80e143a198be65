"""What ``--chart`` names: a packaged chart on disk, a chart in an OCI registry, or one in a Helm repository.

Three forms, told apart by their scheme, never by probing the network:

- ``FILE.tgz`` (or, for ``plan``, a chart folder): read from disk;
- ``oci://REGISTRY/REPO/CHART:VERSION``: a Helm chart stored as an OCI artifact (how NVIDIA
  publishes ``oci://nvcr.io/nvidia/cloud-native-charts/gpu-operator``, signed with cosign);
- ``http(s)://HOST/PATH/CHART:VERSION``: a chart of the HTTP Helm repository at
  ``http(s)://HOST/PATH`` (``index.yaml`` there names its archive and its digest).

A version is required for the remote forms: a bundle pins what it carries.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mirrorkit.chartfile import CHART_NAME, CHART_SEMVER, oci_tag
from mirrorkit.errors import InputError
from mirrorkit.refs import Ref

FILE, OCI, REPO = "file", "oci", "repo"


@dataclass(frozen=True)
class ChartRef:
    kind: str                 # FILE, OCI or REPO
    text: str                 # as the user gave it (the lock's source for remote charts)
    name: str = ""            # the chart's name (remote forms)
    version: str = ""         # the chart's version (remote forms)
    ref: Ref | None = None    # OCI: REGISTRY/REPO/CHART:TAG
    repo_url: str = ""        # REPO: the repository's base URL, without a trailing slash

    @property
    def path(self) -> Path:
        return Path(self.text)

    @property
    def remote(self) -> bool:
        return self.kind != FILE


def _name_version(last: str, text: str) -> tuple[str, str]:
    name, sep, version = last.rpartition(":")
    if not sep or not name or not version:
        raise InputError(f"--chart {text}: give the chart's version, e.g. {text}:VERSION")
    if not CHART_NAME.match(name) or len(name) > 128:
        raise InputError(f"--chart {text}: {name!r} is not a chart name (lowercase letters, digits, . _ -)")
    if not CHART_SEMVER.match(version):
        raise InputError(f"--chart {text}: version {version!r} is not a SemVer version")
    return name, version


def parse_chart_ref(text: str) -> ChartRef:
    """``--chart`` text as one of the three forms; a malformed remote form is bad input (exit 2)."""
    text = text.strip()
    if not text:
        raise InputError("--chart: empty value")
    lowered = text.lower()
    if lowered.startswith("oci://"):
        rest = text[len("oci://"):].rstrip("/")
        repo, _, last = rest.rpartition("/")
        if not repo:
            raise InputError(f"--chart {text}: expected oci://REGISTRY/REPO/CHART:VERSION")
        name, version = _name_version(last, text)
        try:
            ref = Ref.parse(f"{repo}/{name}:{oci_tag(version)}")
        except InputError as exc:
            raise InputError(f"--chart {text}: {exc}") from None
        if "." not in ref.registry and ":" not in ref.registry and ref.registry != "localhost":
            raise InputError(f"--chart {text}: expected oci://REGISTRY/REPO/CHART:VERSION with a registry host")
        return ChartRef(OCI, text, name, version, ref=ref)
    if lowered.startswith(("http://", "https://")):
        scheme, _, rest = text.partition("://")
        host, slash, path = rest.partition("/")
        if "@" in host:
            raise InputError(f"--chart {scheme}://…: credentials do not belong in the URL (use an auth file)")
        if not host or not slash or not path.strip("/"):
            raise InputError(f"--chart {text}: expected {scheme}://HOST/PATH/CHART:VERSION")
        base, _, last = path.rstrip("/").rpartition("/")
        name, version = _name_version(last, text)
        repo_url = f"{scheme.lower()}://{host}" + (f"/{base}" if base else "")
        return ChartRef(REPO, text, name, version, repo_url=repo_url)
    if "://" in text:
        raise InputError(f"--chart {text}: only oci://, http:// and https:// charts, or a file")
    return ChartRef(FILE, text)


__all__ = ["FILE", "OCI", "REPO", "ChartRef", "parse_chart_ref"]
