"""Helm chart archives (``.tgz``), read in memory and never unpacked, and the names charts may have.

One guarded reader for every chart mirrorkit opens (``plan --chart``,
``pull-bundle --chart``): a member outside the chart's directory, a link or a
device, too many members, too many bytes unpacked or a corrupt archive is
refused with a one-line error naming the file, before anything is parsed.
"""

from __future__ import annotations

import gzip
import io
import re
import tarfile
import zlib
from collections.abc import Callable
from typing import Any

from mirrorkit.errors import InputError
from mirrorkit.yamlio import parse_yaml

MAX_CHART = 64 * 1024 * 1024          # the .tgz itself
MAX_UNPACKED = 512 * 1024 * 1024      # sum of member sizes, so a gzip bomb is not inflated for ever
MAX_MEMBERS = 20_000
MAX_CHART_YAML = 1024 * 1024
MAX_MEMBER = 8 * 1024 * 1024          # any other file read out of a chart (values.yaml, a subchart)

CHART_NAME = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")  # one OCI repository path component
# Masterminds semver (what Helm checks a chart version with): lenient, optional leading v
CHART_SEMVER = re.compile(r"^v?[0-9]+(?:\.[0-9]+)?(?:\.[0-9]+)?"
                          r"(?:-[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$")
CHART_TAG = re.compile(r"^[\w][\w.-]{0,127}$")


def oci_tag(version: str) -> str:
    """The OCI tag Helm uses for a chart version: ``+`` is not allowed in tags, so it becomes ``_``."""
    return version.replace("+", "_")


def chart_members(archive: bytes, where: str, wanted: Callable[[str], bool]) -> dict[str, bytes]:
    """The wanted files of a chart archive (path below the chart's top directory -> bytes).

    Every member's name, type and size is checked first, whether it is wanted or not.
    """
    if len(archive) > MAX_CHART:
        raise InputError(f"{where}: chart archive is {len(archive)} bytes, larger than the {MAX_CHART} allowed")
    if archive[:2] != b"\x1f\x8b":
        raise InputError(f"{where}: not a Helm chart archive (expected a gzip-compressed tar, .tgz)")
    files: dict[str, bytes] = {}
    top: str | None = None
    unpacked = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r|gz") as tar:
            for count, member in enumerate(tar, 1):
                name = member.name
                bad = f"{where}: not a usable chart archive: entry {name!r}"
                if count > MAX_MEMBERS:
                    raise InputError(f"{where}: not a usable chart archive: more than {MAX_MEMBERS} entries")
                if "\\" in name or name.startswith("/") or ".." in name.split("/"):
                    raise InputError(f"{bad} points outside the chart directory")
                if not (member.isfile() or member.isdir()) or member.sparse is not None:
                    raise InputError(f"{bad} is not a regular file or directory (links are not allowed)")
                unpacked += member.size
                if unpacked > MAX_UNPACKED:
                    raise InputError(f"{where}: not a usable chart archive: more than {MAX_UNPACKED} bytes unpacked")
                first, _, rest = name.rstrip("/").partition("/")
                if top is None:
                    top = first
                elif first != top:
                    raise InputError(f"{bad} is outside the chart's directory {top!r}")
                if member.isfile() and rest and wanted(rest):
                    limit = MAX_CHART_YAML if rest == "Chart.yaml" else MAX_MEMBER
                    if member.size > limit:
                        raise InputError(f"{where}: {rest} is {member.size} bytes, more than {limit}")
                    fh = tar.extractfile(member)
                    files[rest] = fh.read() if fh else b""
    except (tarfile.TarError, EOFError, OSError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(f"{where}: not a Helm chart archive (corrupt .tgz: {exc})") from None
    return files


def read_chart_yaml(archive: bytes, where: str) -> dict[str, Any]:
    """Chart.yaml of a chart archive, read in memory; every member's name and type is checked first."""
    chart_yaml = chart_members(archive, where, lambda rel: rel == "Chart.yaml").get("Chart.yaml")
    if chart_yaml is None:
        raise InputError(f"{where}: not a Helm chart archive: no Chart.yaml in its top directory")
    try:
        text = chart_yaml.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{where}: Chart.yaml is not UTF-8 text") from None
    meta = parse_yaml(text, f"{where}: Chart.yaml")
    if not isinstance(meta, dict):
        raise InputError(f"{where}: Chart.yaml must be a mapping")
    return meta
