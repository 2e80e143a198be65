"""The bundle lock (``bundle.yaml``): what a bundle holds, digest for digest.

It embeds the plan, names every image (source, destination, digest, platforms,
the manifests and blobs it needs) and every blob (digest, size), so the
air-gapped side can check every byte before any of it reaches a registry. A
differential bundle also names the blobs it left out and what it depends on.
Reading a lock trusts nothing: every digest and size is validated here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from mirrorkit.chartfile import CHART_NAME, CHART_SEMVER, CHART_TAG, oci_tag
from mirrorkit.errors import InputError
from mirrorkit.knownkeys import UnknownKeyError, check_keys, located
from mirrorkit.lockpackages import LockPackageRepo, package_repo_from_dict
from mirrorkit.plan import Plan, image_refs, one_line, plan_from_dict
from mirrorkit.refs import Ref, check_digest, check_tag
from mirrorkit.yamlio import parse_yaml

# the keys a lock may hold, per level (extend here when a lock gains a field; knownkeys refuses the rest)
LOCK_KEYS = frozenset({"apiVersion", "kind", "id", "created", "generator", "depends_on", "images", "blobs", "omitted",
                       "charts", "artifacts", "verifications", "plan", "signing", "installer", "package_repos"})
LOCK_IMAGE_KEYS = frozenset({"source", "destination", "digest", "media_type", "platforms", "manifests", "blobs",
                             "planned_digest", "note"})
LOCK_BLOB_KEYS = frozenset({"digest", "size"})
LOCK_CHART_KEYS = frozenset({"name", "version", "app_version", "tag", "source", "repository", "digest", "media_type",
                             "config", "layer", "blobs", "kind", "provenance"})
LOCK_ARTIFACT_KEYS = frozenset({"subject", "digest", "media_type", "artifact_type", "tag", "source", "destination"})
LOCK_VERIFICATION_KEYS = frozenset({"subject", "key_fingerprint", "identity", "verified_at"})
LOCK_PACKAGE_REPO_KEYS = frozenset({"os", "name", "family", "source", "repo_file", "repo_text", "signed_by", "files"})
LOCK_PACKAGE_FILE_KEYS = frozenset({"path", "sha256", "size", "kind"})
LOCK_SIGNING_KEYS = frozenset({"key_fingerprint", "key_type", "signed_at"})
LOCK_INSTALLER_KEYS = frozenset({"file", "digest", "size", "version", "platforms", "pythons"})

API_VERSION = "mirrorkit.dev/v1alpha1"
KIND = "BundleLock"
MAX_BLOB_SIZE = 1 << 40


@dataclass
class LockImage:
    source: str
    destination: str | None
    digest: str
    media_type: str
    platforms: list[str] = field(default_factory=list)
    manifests: list[str] = field(default_factory=list)
    blobs: list[str] = field(default_factory=list)
    planned_digest: str | None = None
    note: str = ""

    @property
    def rewritten_index(self) -> bool:
        """An index --platform rewrote (several platforms kept): a new digest no publisher signed."""
        return bool(self.planned_digest and self.planned_digest != self.digest and self.manifests)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"source": self.source, "destination": self.destination,
                             "digest": self.digest, "media_type": self.media_type,
                             "platforms": self.platforms, "manifests": self.manifests,
                             "blobs": self.blobs}
        if self.planned_digest and self.planned_digest != self.digest:
            d["planned_digest"] = self.planned_digest
        if self.note:
            d["note"] = self.note
        return d


@dataclass
class LockBlob:
    digest: str
    size: int


@dataclass
class LockArtifact:
    """A signature, attestation, SBOM or referrer carried with an image (see mirrorkit.trust)."""

    subject: str
    digest: str
    media_type: str
    artifact_type: str
    tag: str | None
    source: str
    destination: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"subject": self.subject, "digest": self.digest, "media_type": self.media_type,
                "artifact_type": self.artifact_type, "tag": self.tag, "source": self.source,
                "destination": self.destination}


@dataclass
class LockVerification:
    """Which key verified which digest, as whom, and when."""

    subject: str
    key_fingerprint: str
    identity: str
    verified_at: str

    def to_dict(self) -> dict[str, Any]:
        return {"subject": self.subject, "key_fingerprint": self.key_fingerprint, "identity": self.identity,
                "verified_at": self.verified_at}


@dataclass(frozen=True)
class LockInstaller:
    """mirrorkit's offline installer, carried as one tar blob (``pull-bundle --with-installer``)."""

    digest: str
    size: int
    version: str
    platforms: list[str]
    pythons: list[str]
    file: str

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "digest": self.digest, "size": self.size, "version": self.version,
                "platforms": self.platforms, "pythons": self.pythons}


@dataclass
class LockSigning:
    """Who signed the lock and when (``pull-bundle --sign-key``), written into the lock before it is signed.

    Covered by the signature itself, so it cannot be swapped without breaking it; a
    lock without it is unsigned. A claim until mirrorkit.trust.bundlesig checks the signature.
    """

    key_fingerprint: str
    key_type: str
    signed_at: str

    def to_dict(self) -> dict[str, Any]:
        return {"key_fingerprint": self.key_fingerprint, "key_type": self.key_type, "signed_at": self.signed_at}


@dataclass
class Lock:
    id: str
    created: str
    generator: str
    plan: Plan
    images: list[LockImage]
    blobs: list[LockBlob]
    omitted: list[LockBlob] = field(default_factory=list)
    depends_on: list[str] = field(default_factory=list)
    charts: list[dict[str, Any]] = field(default_factory=list)
    artifacts: list[LockArtifact] = field(default_factory=list)
    verifications: list[LockVerification] = field(default_factory=list)
    signing: LockSigning | None = None
    installer: LockInstaller | None = None     # optional, newer than the first bundles
    package_repos: list[LockPackageRepo] = field(default_factory=list)

    def blob_sizes(self) -> dict[str, int]:
        return {b.digest: b.size for b in self.blobs}

    def manifest_digests(self) -> set[str]:
        out: set[str] = set()
        for img in self.images:
            out.add(img.digest)
            out.update(img.manifests)
        return out

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "apiVersion": API_VERSION, "kind": KIND, "id": self.id, "created": self.created,
            "generator": self.generator,
            **({"signing": self.signing.to_dict()} if self.signing else {}),
            "depends_on": self.depends_on,
            "images": [i.to_dict() for i in self.images],
            "blobs": [{"digest": b.digest, "size": b.size} for b in self.blobs],
            "omitted": [{"digest": b.digest, "size": b.size} for b in self.omitted],
            "charts": self.charts,
        }
        if self.artifacts:
            out["artifacts"] = [a.to_dict() for a in self.artifacts]
        if self.verifications:
            out["verifications"] = [v.to_dict() for v in self.verifications]
        if self.installer is not None:
            out["installer"] = self.installer.to_dict()
        if self.package_repos:
            out["package_repos"] = [r.to_dict() for r in self.package_repos]
        out["plan"] = self.plan.to_dict()
        return out

    def dumps(self) -> str:
        return yaml.dump(self.to_dict(), Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False,
                         width=120)


def _blob(data: Any, where: str) -> LockBlob:
    if not isinstance(data, dict):
        raise InputError(f"{where}: each blob must be a mapping")
    digest = check_digest(data.get("digest"), f"blob digest in {where}")
    size = data.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0 or size > MAX_BLOB_SIZE:
        raise InputError(f"{where}: blob {digest} has an invalid size {size!r}")
    return LockBlob(digest, size)


def _digests(value: Any, where: str) -> list[str]:
    if not isinstance(value, list):
        raise InputError(f"{where}: expected a list of digests")
    return [check_digest(v, where) for v in value]


def _image(data: Any, where: str) -> LockImage:
    source, dest, platforms = image_refs(data, where)
    media_type = data.get("media_type")
    if not isinstance(media_type, str):
        raise InputError(f"{where}: 'media_type' must be a string")
    planned = data.get("planned_digest")
    return LockImage(
        source=source, destination=dest, digest=check_digest(str(data.get("digest") or ""), f"{where} digest"),
        media_type=media_type, platforms=platforms,
        manifests=_digests(data.get("manifests") or [], f"{where} manifests"),
        blobs=_digests(data.get("blobs") or [], f"{where} blobs"),
        planned_digest=check_digest(planned, f"{where} planned_digest") if planned else None,
        note=_text(data, "note", where, optional=True) or "",
    )


def _text(data: dict[str, Any], key: str, where: str, optional: bool = False) -> str | None:
    return one_line(data.get(key), where, key, optional)


def _artifact(data: Any, where: str) -> LockArtifact:
    if not isinstance(data, dict):
        raise InputError(f"{where}: each artifact must be a mapping")
    tag = _text(data, "tag", where, optional=True)
    if tag is not None:
        check_tag(tag)
    return LockArtifact(
        subject=check_digest(str(data.get("subject") or ""), f"{where} subject"),
        digest=check_digest(str(data.get("digest") or ""), f"{where} digest"),
        media_type=_text(data, "media_type", where) or "",
        artifact_type=_text(data, "artifact_type", where, optional=True) or "",
        tag=tag, source=_text(data, "source", where) or "",
        destination=_text(data, "destination", where, optional=True))


def _verification(data: Any, where: str) -> LockVerification:
    if not isinstance(data, dict):
        raise InputError(f"{where}: each verification must be a mapping")
    return LockVerification(
        subject=check_digest(str(data.get("subject") or ""), f"{where} subject"),
        key_fingerprint=check_digest(str(data.get("key_fingerprint") or ""), f"{where} key_fingerprint"),
        identity=_text(data, "identity", where) or "", verified_at=_text(data, "verified_at", where) or "")


def _signing(data: Any, where: str) -> LockSigning | None:
    if data is None:
        return None
    if not isinstance(data, dict):
        raise InputError(f"{where}: 'signing' must be a mapping")
    return LockSigning(key_fingerprint=check_digest(str(data.get("key_fingerprint") or ""),
                                                    f"{where}: signing key_fingerprint"),
                       key_type=_text(data, "key_type", where) or "",
                       signed_at=_text(data, "signed_at", where) or "")


_WORD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")


def _installer(data: Any, where: str, sizes: dict[str, int]) -> LockInstaller | None:
    """The optional ``installer`` entry: a blob the bundle carries, and plain words a shell line may quote."""
    if data is None:
        return None
    at = f"{where}: installer"
    if not isinstance(data, dict):
        raise InputError(f"{at}: must be a mapping")
    digest = check_digest(str(data.get("digest") or ""), f"{at} digest")
    if digest not in sizes or sizes[digest] != data.get("size"):
        raise InputError(f"{at}: {digest} is not a blob the bundle carries, at the size the lock gives")
    words = {k: data.get(k) for k in ("version", "file")}
    lists = {k: data.get(k) for k in ("platforms", "pythons")}
    for key, value in words.items():
        if not isinstance(value, str) or not _WORD.match(value):
            raise InputError(f"{at}: invalid {key} {value!r}")
    for key, value in lists.items():
        if not isinstance(value, list) or not all(isinstance(v, str) and _WORD.match(v) for v in value):
            raise InputError(f"{at}: invalid {key} {value!r}")
    return LockInstaller(digest, sizes[digest], str(words["version"]), list(lists["platforms"] or []),
                         list(lists["pythons"] or []), str(words["file"]))


def _listed(data: dict[str, Any], key: str, where: str) -> list[Any]:
    value = data.get(key) or []
    if not isinstance(value, list):
        raise InputError(f"{where}: '{key}' must be a list")
    return value


def _check_lock_keys(data: dict[str, Any], where: str) -> None:
    check_keys(data, LOCK_KEYS, where)
    for level, allowed in (("images", LOCK_IMAGE_KEYS), ("blobs", LOCK_BLOB_KEYS), ("omitted", LOCK_BLOB_KEYS),
                           ("charts", LOCK_CHART_KEYS), ("artifacts", LOCK_ARTIFACT_KEYS),
                           ("verifications", LOCK_VERIFICATION_KEYS), ("package_repos", LOCK_PACKAGE_REPO_KEYS)):
        entries = data.get(level)
        for n, entry in enumerate(entries if isinstance(entries, list) else []):
            if isinstance(entry, dict):
                check_keys(entry, allowed, f"{where}: {level}[{n}]", (level, n))
    repos = data.get("package_repos")
    for n, repo in enumerate(repos if isinstance(repos, list) else []):
        files = repo.get("files") if isinstance(repo, dict) else None
        for m, entry in enumerate(files if isinstance(files, list) else []):
            if isinstance(entry, dict):
                check_keys(entry, LOCK_PACKAGE_FILE_KEYS, f"{where}: package_repos[{n}].files[{m}]",
                           ("package_repos", n, "files", m))
    for level, allowed in (("signing", LOCK_SIGNING_KEYS), ("installer", LOCK_INSTALLER_KEYS)):
        if isinstance(data.get(level), dict):
            check_keys(data[level], allowed, f"{where}: {level}", (level,))


def lock_from_dict(data: Any, where: str, text: str | None = None) -> Lock:
    """``text``: the lock's YAML, so that an unknown key is reported with its line."""
    try:
        return _lock_from_dict(data, where)
    except UnknownKeyError as exc:
        if text is None:
            raise
        raise located(exc, text, where) from None


def _lock_from_dict(data: Any, where: str) -> Lock:
    if not isinstance(data, dict) or data.get("kind") != KIND or data.get("apiVersion") != API_VERSION:
        raise InputError(f"{where}: not a mirrorkit bundle lock (expected kind {KIND})")
    _check_lock_keys(data, where)
    for key in ("images", "blobs"):
        if not isinstance(data.get(key), list):
            raise InputError(f"{where}: '{key}' must be a list")
    lock_id = data.get("id")
    if not isinstance(lock_id, str) or not lock_id or len(lock_id) > 128:
        raise InputError(f"{where}: invalid bundle id")
    blobs = [_blob(b, f"{where}: blobs[{n}]") for n, b in enumerate(data["blobs"])]
    omitted = [_blob(b, f"{where}: omitted[{n}]") for n, b in enumerate(data.get("omitted") or [])]
    seen: set[str] = set()
    for b in blobs + omitted:
        if b.digest in seen:
            raise InputError(f"{where}: blob {b.digest} is listed twice")
        seen.add(b.digest)
    images = [_image(i, f"{where}: images[{n}]") for n, i in enumerate(data["images"])]
    for img in images:
        for digest in [img.digest, *img.manifests, *img.blobs]:
            if digest not in seen:
                raise InputError(f"{where}: image {img.source} needs {digest}, which the lock "
                                 "neither carries nor lists as omitted")
    plan_data = data.get("plan")
    if not isinstance(plan_data, dict):
        raise InputError(f"{where}: 'plan' must be a mapping")
    depends = data.get("depends_on") or []
    if not isinstance(depends, list) or not all(isinstance(d, str) for d in depends):
        raise InputError(f"{where}: 'depends_on' must be a list of strings")
    charts = _listed(data, "charts", where)
    artifacts = [_artifact(a, f"{where}: artifacts[{n}]") for n, a in enumerate(_listed(data, "artifacts", where))]
    sources = {i.source for i in images}
    # a chart fetched from a registry carries its signatures too, under its oci:// reference
    sources |= {str(c["source"]) for c in charts if isinstance(c, dict) and c.get("kind") == "oci" and c.get("source")}
    for art in artifacts:
        if art.digest not in seen:
            raise InputError(f"{where}: artifact {art.digest} of {art.source} is not carried by the lock")
        if art.source not in sources:
            raise InputError(f"{where}: artifact {art.digest} belongs to {art.source!r}, which is not an image "
                             "of this lock")
    verifications = [_verification(v, f"{where}: verifications[{n}]")
                     for n, v in enumerate(_listed(data, "verifications", where))]
    for n, dep in enumerate(depends):
        one_line(dep, where, f"depends_on[{n}]")
    sizes = {b.digest: b.size for b in blobs}
    package_repos = [package_repo_from_dict(r, f"{where}: package_repos[{n}]", sizes)
                     for n, r in enumerate(_listed(data, "package_repos", where))]
    if len({(r.os, r.name) for r in package_repos}) != len(package_repos):
        raise InputError(f"{where}: a package repository (os, name) is listed twice")
    lock = Lock(id=lock_id, created=_text(data, "created", where, optional=True) or "",
                generator=_text(data, "generator", where, optional=True) or "",
                plan=_plan_of(plan_data, where), images=images, blobs=blobs,
                omitted=omitted, depends_on=depends, charts=charts, artifacts=artifacts,
                verifications=verifications, signing=_signing(data.get("signing"), where),
                installer=_installer(data.get("installer"), where, {b.digest: b.size for b in blobs}),
                package_repos=package_repos)
    lock_charts(lock, where)   # every chart entry checked now, before any of it is used
    return lock


def _plan_of(data: dict[str, Any], where: str) -> Plan:
    try:
        return plan_from_dict(data, f"{where}: plan")
    except UnknownKeyError as exc:
        raise exc.within(("plan",)) from None


def loads_lock(text: str, where: str) -> Lock:
    return lock_from_dict(parse_yaml(text, where), where, text)


@dataclass(frozen=True)
class LockChart:
    """A Helm chart the bundle carries (``pull-bundle --chart``), as its lock entry says, checked."""

    name: str
    tag: str
    digest: str
    config: str
    layer: str
    repository: str | None
    version: str = ""
    kind: str = "file"                 # where it came from: file, oci (signatures may travel) or repo
    source: str = ""                   # the file's name, the oci:// reference or the chart's URL
    provenance: str | None = None      # the Helm provenance file's digest (a second layer), when carried


def lock_charts(lock: Lock, where: str = "bundle lock") -> list[LockChart]:
    """The lock's chart entries, checked: names, versions, tags, digests, and every blob carried by the bundle."""
    sizes = lock.blob_sizes()
    out = []
    for n, entry in enumerate(lock.charts):
        at = f"{where}: charts[{n}]"
        if not isinstance(entry, dict):
            raise InputError(f"{at}: each chart must be a mapping")
        name, tag, repo, version = entry.get("name"), entry.get("tag"), entry.get("repository"), entry.get("version")
        if not isinstance(name, str) or not CHART_NAME.match(name) or len(name) > 128:
            raise InputError(f"{at}: invalid chart name {name!r}")
        if not isinstance(tag, str) or not CHART_TAG.match(tag):
            raise InputError(f"{at}: invalid chart tag {tag!r}")
        if version is not None and (not isinstance(version, str) or not CHART_SEMVER.match(version)
                                    or oci_tag(version) != tag):
            raise InputError(f"{at}: invalid chart version {version!r} (a SemVer version whose tag is {tag!r})")
        if repo is not None:
            one_line(repo, at, "repository")
            check_repository(repo, at)
        for key in ("app_version", "source", "media_type"):
            one_line(entry.get(key), at, key, optional=True)
        digest, config, layer = (check_digest(str(entry.get(k)), f"{k} of chart {name} in the lock")
                                 for k in ("digest", "config", "layer"))
        kind = entry.get("kind", "file")     # optional fields, newer than the first chart bundles
        if kind not in ("file", "oci", "repo"):
            raise InputError(f"{at}: invalid chart kind {kind!r} (file, oci or repo)")
        prov = entry.get("provenance")
        provenance = check_digest(str(prov), f"provenance of chart {name} in the lock") if prov is not None else None
        for needed in (digest, config, layer, *([provenance] if provenance else [])):
            if needed not in sizes:
                raise InputError(f"{at}: chart {name}:{tag} needs {needed}, which the bundle does not carry")
        out.append(LockChart(name, tag, digest, config, layer, repo, version or tag, kind,
                             str(entry.get("source") or ""), provenance))
    return out


def check_repository(repo: str, where: str) -> None:
    """A chart's recorded ``HOST/PATH`` repository must be a reference's repository, nothing more."""
    try:
        ref = Ref.parse(f"{repo}:tag")
    except InputError as exc:
        raise InputError(f"{where}: invalid chart repository {repo!r}: {exc}") from None
    if ref.name != repo:
        raise InputError(f"{where}: invalid chart repository {repo!r}")
