"""The OCI content model: Descriptor, Manifest and Index, parsed and validated once.

Manifest JSON used to be read in several places with different rules (one
raised on a bad descriptor, another dropped it). Here a document is parsed once
into frozen values, with one rule: a descriptor without a well-formed sha256
digest, with a size that is not a non-negative integer, or with a media type
that is not ``type/subtype`` is refused (OperationError naming the document).

Fields a caller does not use are not dropped: every value keeps the exact JSON
object it came from (``fields``) and a document keeps its exact bytes (``raw``),
so nothing is ever re-serialised to be pushed or hashed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from mirrorkit.errors import OperationError
from mirrorkit.refs import is_digest

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
MEDIA_TYPE = re.compile(r"[A-Za-z0-9][\w!#$&^.+-]{0,126}/[A-Za-z0-9][\w!#$&^.+-]{0,126}")


def _frozen(doc: dict[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(doc)


@dataclass(frozen=True)
class Descriptor:
    """What a manifest says about other content: its digest, size and media type, and the rest as given."""

    digest: str
    size: int
    media_type: str = ""
    artifact_type: str = ""
    platform: str = ""              # os/architecture[/variant]; "" when the descriptor names none
    fields: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def parse(cls, entry: Any, what: str) -> Descriptor:
        if not isinstance(entry, dict) or not isinstance(entry.get("digest"), str) or not is_digest(entry["digest"]):
            raise OperationError(f"{what}: descriptor without a valid sha256 digest")
        digest = entry["digest"]
        size = entry.get("size", 0)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise OperationError(f"{what}: descriptor {digest} has an invalid size")
        media = _media(entry.get("mediaType"), f"{what}: descriptor {digest}")
        artifact = _media(entry.get("artifactType"), f"{what}: descriptor {digest}", "artifactType")
        return cls(digest, size, media, artifact, _platform(entry.get("platform")), _frozen(dict(entry)))


def _media(value: Any, what: str, name: str = "mediaType") -> str:
    if value is None or value == "":
        return ""
    if not isinstance(value, str) or not MEDIA_TYPE.fullmatch(value):
        raise OperationError(f"{what}: {name} {value!r} is not a media type")
    return value


def _platform(value: Any) -> str:
    if not isinstance(value, dict):
        return ""
    text = f"{value.get('os', 'unknown')}/{value.get('architecture', 'unknown')}"
    return f"{text}/{value['variant']}" if value.get("variant") else text


@dataclass(frozen=True)
class Manifest:
    """One image (or artifact) manifest: a config and layers."""

    raw: bytes = field(repr=False)
    media_type: str
    config: Descriptor | None
    layers: tuple[Descriptor, ...]
    subject: Descriptor | None = None
    artifact_type: str = ""
    fields: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def blobs(self) -> list[Descriptor]:
        """The config, then every layer: what the manifest needs in the repository."""
        return ([self.config] if self.config is not None else []) + list(self.layers)


@dataclass(frozen=True)
class Index:
    """An image index (manifest list), a referrers answer or a fallback tag index: descriptors of manifests."""

    raw: bytes = field(repr=False)
    media_type: str
    manifests: tuple[Descriptor, ...]
    subject: Descriptor | None = None
    fields: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


def load_object(data: bytes, what: str) -> dict[str, Any]:
    """The document as a JSON object; refuses what no registry or bundle should hold."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        raise OperationError(f"{what}: manifest is not valid JSON") from None
    if not isinstance(doc, dict):
        raise OperationError(f"{what}: manifest is not a JSON object")
    if "manifests" in doc and "layers" in doc:
        raise OperationError(f"{what}: manifest declares both 'manifests' and 'layers'")
    return doc


def media_type_of(doc: Mapping[str, Any], hint: str = "") -> str:
    """``hint`` (a descriptor's or a header's) when given, else the body's ``mediaType``, else by shape."""
    if hint:
        return hint
    media = doc.get("mediaType")
    if isinstance(media, str) and media:
        return media
    return OCI_INDEX if "manifests" in doc else OCI_MANIFEST


def parse(data: bytes, what: str, hint: str = "") -> Manifest | Index:
    """A manifest or an index from its exact bytes, every descriptor validated."""
    doc = load_object(data, what)
    media = media_type_of(doc, hint)
    subject = Descriptor.parse(doc["subject"], what) if doc.get("subject") is not None else None
    if media in INDEX_TYPES or "manifests" in doc:
        return Index(data, media, _list(doc, "manifests", what), subject, _frozen(doc))
    config = Descriptor.parse(doc["config"], what) if doc.get("config") is not None else None
    artifact = _media(doc.get("artifactType"), what, "artifactType")
    return Manifest(data, media, config, _list(doc, "layers", what), subject, artifact, _frozen(doc))


def parse_index(data: bytes, what: str) -> Index:
    """An index, or a document with a ``manifests`` list (a referrers answer); anything else is refused."""
    found = parse(data, what, OCI_INDEX)
    assert isinstance(found, Index)     # the hint makes every document an index
    return found


def _list(doc: dict[str, Any], key: str, what: str) -> tuple[Descriptor, ...]:
    entries = doc.get(key)
    if entries is None:
        return ()
    if not isinstance(entries, list):
        raise OperationError(f"{what}: '{key}' is not a list")
    return tuple(Descriptor.parse(entry, what) for entry in entries)
