"""What travels with an image: cosign's tag-schema artifacts and OCI 1.1 referrers.

A few requests per repository, not a storm per image: the repository's tag list is
read once and only tags that exist are fetched; the referrers API is probed once
and, where the registry has none (a 404: distribution 2.8 has none), the
``sha256-<hex>`` fallback tag index stands in for it, found in the same tag list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mirrorkit.errors import NotFoundError, RegistryError
from mirrorkit.oci import model
from mirrorkit.oci.client import MAX_SMALL_BLOB, RegistryClient
from mirrorkit.oci.manifests import OCI_INDEX
from mirrorkit.oci.referrers import descriptors, referrers
from mirrorkit.refs import Ref
from mirrorkit.trust.cosign import SIMPLE_SIGNING, sig_tag

TAG_SUFFIXES = {"sig": SIMPLE_SIGNING, "att": "application/vnd.dsse.envelope.v1+json",
                "sbom": "application/vnd.dev.cosign.sbom"}
IMAGE_CONFIG = "application/vnd.oci.image.config.v1+json"


@dataclass(frozen=True)
class Artifact:
    """A manifest that belongs to an image: copied as one more root into the image's repository."""

    subject: str
    digest: str
    media_type: str
    artifact_type: str
    tag: str | None


def artifact_type_of(data: bytes, fallback: str, what: str = "artifact") -> str:
    """``artifactType`` if set, else a non-image config type, else what the tag schema says."""
    doc = model.parse(data, what)
    if isinstance(doc, model.Manifest):
        if doc.artifact_type:
            return doc.artifact_type
        ctype = doc.config.media_type if doc.config is not None else ""
        if ctype and ctype != IMAGE_CONFIG and "docker" not in ctype:
            return ctype
    elif isinstance(doc.fields.get("artifactType"), str) and doc.fields["artifactType"]:
        return str(doc.fields["artifactType"])
    return fallback


class Discovery:
    """Artifact lookups for one repository; its tag list and the referrers probe are asked once.

    A registry that will not list tags (some refuse ``tags/list`` to pull-only tokens)
    is asked for each candidate tag instead: slower, but nothing is missed.
    """

    def __init__(self, client: RegistryClient, ref: Ref, without_api: set[str] | None = None) -> None:
        self.client = client
        self.ref = ref
        self._tags: set[str] | None = None
        self._listed = True
        self._referrers_api: bool | None = None
        # registries known to have no referrers API at all, shared by the Discovery of each repository: a
        # no-change rerun of 60 images then asks distribution 2.8 once, not 60 times (50 ms each, far away)
        self.without_api = without_api if without_api is not None else set()

    def tags(self) -> set[str] | None:
        """The repository's tags, or None when the registry refuses to list them."""
        if self._tags is None and self._listed:
            try:
                self._tags = set(self.client.list_tags(self.ref.registry, self.ref.repository))
            except NotFoundError:
                self._tags = set()
            except RegistryError as exc:
                if not exc.refused:     # failing or away: an error, not a reason to ask tag by tag
                    raise
                self._listed = False    # refused (a pull-only token, AuthError included): ask each tag
        return self._tags

    def _manifest(self, tag: str) -> Any:
        tags = self.tags()
        if tags is not None and tag not in tags:
            return None
        try:
            return self.client.get_manifest(self.ref, tag)
        except NotFoundError:
            return None     # deleted since the tag list was read, or never there

    def _referrers(self, digest: str) -> list[model.Descriptor] | None:
        """The referrers API's answer, or None when the registry has no such API (asked once)."""
        if self._referrers_api is False or self.ref.registry in self.without_api:
            return None
        found = referrers(self.client, self.ref, digest, no_api=lambda: self.without_api.add(self.ref.registry))
        self._referrers_api = found is not None
        return found

    def find(self, digest: str) -> list[Artifact]:
        out: list[Artifact] = []
        for suffix, fallback in TAG_SUFFIXES.items():
            tag = sig_tag(digest, suffix)
            m = self._manifest(tag)
            if m is not None:
                out.append(Artifact(digest, m.digest, m.media_type,
                                    artifact_type_of(m.data, fallback, f"{self.ref.name}:{tag}"), tag))
        listed = self._referrers(digest)
        if listed is None:
            fallback_tag = sig_tag(digest, "")
            index = self._manifest(fallback_tag)
            if index is not None:
                listed = descriptors(index.data, f"{self.ref.name}:{fallback_tag}")
                out.append(Artifact(digest, index.digest, index.media_type, OCI_INDEX, fallback_tag))
        known = {a.digest for a in out}
        for entry in listed or []:
            if entry.digest in known:
                continue
            known.add(entry.digest)
            out.append(Artifact(digest, entry.digest, entry.media_type, entry.artifact_type, None))
        return out


def find_artifacts(client: RegistryClient, ref: Ref, digests: list[str]) -> list[Artifact]:
    """Every artifact of every digest in ``ref``'s repository: tag schema first, then referrers."""
    discovery = Discovery(client, ref)
    out: list[Artifact] = []
    for digest in dict.fromkeys(digests):
        out.extend(discovery.find(digest))
    return out


def fetch_small_blob(client: RegistryClient, ref: Ref, digest: str, limit: int = MAX_SMALL_BLOB) -> bytes:
    """A small blob (config, signature payload, SBOM) whole, hash checked, size capped."""
    return client.get_small_blob(ref, digest, limit)
