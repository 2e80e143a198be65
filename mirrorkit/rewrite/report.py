"""The transfer report: what crosses the air gap, for the person who approves the media.

A report says only what this run checked itself. The bundle's bytes are hashed here
against its lock; the lock's own signature (``pull-bundle --sign-key``) is checked only
with ``--bundle-key``, the images' cosign signatures only with ``--verify-key``. What the
lock merely claims (a ``verifications:`` record written at pull time, a ``signing:``
block) is shown as a claim or a record, never as a result: whoever can change the media
can change the lock and its ``.sha256`` files together.

Every string in the report comes from a plan, a lock or a registry, i.e. from untrusted
hands; the renderers (mirrorkit.rewrite.report_html) escape every one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mirrorkit import progress
from mirrorkit.bundle.inputs import load_plan_or_lock
from mirrorkit.bundle.volumes import bundle_volumes, read_checksum
from mirrorkit.diff import Diff, compare
from mirrorkit.errors import InputError, MirrorkitError, OperationError
from mirrorkit.lock import Lock, lock_charts
from mirrorkit.plan import Plan
from mirrorkit.trust.carried import ABSENT, INVALID, PRESENT, VERIFIED, ImageSignature, image_signatures
from mirrorkit.trust.keys import PublicKey

DAMAGED, UNCHECKED = "damaged", "not checked"
SIGNATURE_STATES = (VERIFIED, PRESENT, ABSENT, INVALID)


@dataclass
class ReportImage:
    source: str
    digest: str | None
    destination: str | None
    component: str
    reason: str
    size: int | None
    platforms: list[str]
    signature: str                      # verified | present | absent | invalid: as checked by this run
    key_fingerprint: str | None = None  # the key this run verified the signature under
    identity: str | None = None
    sbom: bool = False
    attestation: bool = False
    new: bool = False
    signature_detail: str = ""
    recorded: dict[str, str] | None = None   # the lock's pull-time record: a claim, not a result


@dataclass
class Volume:
    name: str
    sha256: str | None
    size: int


@dataclass
class LockSignature:
    """The lock's signature: ``verified`` (by this run, with --bundle-key), ``present`` (carried, not
    checked: what it claims is shown as a claim) or ``absent`` (not signed)."""

    state: str
    key_fingerprint: str | None = None
    key_type: str | None = None
    signed_at: str | None = None


@dataclass
class Report:
    source: str
    kind: str                           # plan, lock, bundle
    release: str | None
    flavor: str | None
    registry: str | None
    nodes: list[dict[str, Any]]
    images: list[ReportImage]
    volumes: list[Volume]
    integrity: str                      # verified: this run hashed every byte against the lock
    integrity_detail: str
    bundle_id: str | None = None
    since: str | None = None
    since_diff: dict[str, Any] | None = None
    component_bytes: dict[str, int] = field(default_factory=dict)
    lock_signature: LockSignature = field(default_factory=lambda: LockSignature(ABSENT))
    created: str | None = None
    generator: str | None = None
    charts: list[dict[str, str]] = field(default_factory=list)
    differential: dict[str, Any] | None = None
    keys: list[str] = field(default_factory=list)       # --verify-key fingerprints this run checked with
    # the driver packages (issue 17, with the packages work) join the facts here
    installer: dict[str, Any] | None = None   # mirrorkit's offline installer, when the bundle carries one

    @property
    def damaged(self) -> bool:
        return self.integrity == DAMAGED

    @property
    def authenticated(self) -> bool:
        """Every byte hashed against a lock whose signature this run verified: the only green verdict."""
        return self.integrity == VERIFIED and self.lock_signature.state == VERIFIED

    @property
    def unverified_images(self) -> list[ReportImage]:
        return [i for i in self.images if i.signature != VERIFIED]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["authenticated"] = self.authenticated
        return out


def _is_bundle(path: Path) -> bool:
    return path.is_dir() or (path.is_file() and not path.name.endswith((".yaml", ".yml", ".json")))


@dataclass
class _Checked:
    integrity: str
    detail: str
    lock: Lock | None = None
    signature_carried: bool = False
    signatures: dict[str, ImageSignature] | None = None
    lock_sha256: str | None = None


def _verify(volumes: list[Path], keys: list[PublicKey]) -> _Checked:
    """Hash every byte against the lock and, with keys, check the carried cosign signatures from the bundle."""
    from mirrorkit.bundle.reader import BundleReader

    try:
        with BundleReader(volumes) as reader:
            report = reader.verify()
            checked = _Checked(VERIFIED, f"every byte hashed: {report.blobs} blobs, {human(report.bytes)} in "
                                         f"{report.volumes} volume(s), all matching the lock", reader.lock,
                               reader.lock_signature is not None,
                               lock_sha256=hashlib.sha256(reader.lock_bytes).hexdigest())
            if keys:
                checked.signatures = image_signatures(reader.lock, keys, reader.read_small)
            return checked
    except MirrorkitError as exc:
        return _Checked(DAMAGED, str(exc))


def _artifact_kinds(lock: Lock | None) -> dict[str, set[str]]:
    """subject digest -> {"sbom", "attestation", "signature"} from the lock's artifacts."""
    out: dict[str, set[str]] = {}
    for art in lock.artifacts if lock else []:
        text = " ".join((art.artifact_type, art.media_type, art.tag or "")).lower()
        kinds = out.setdefault(art.subject, set())
        if any(w in text for w in ("spdx", "cyclonedx", "sbom", "syft")):
            kinds.add("sbom")
        if any(w in text for w in ("in-toto", "intoto", "attestation", "provenance", "slsa", ".att")):
            kinds.add("attestation")
        if text.endswith(".sig") or "signature" in text:
            kinds.add("signature")
    return out


def _images(plan: Plan, lock: Lock | None, diff: Diff | None,
            checked: dict[str, ImageSignature] | None) -> list[ReportImage]:
    sizes = {b.digest: b.size for b in (lock.blobs + lock.omitted)} if lock else {}
    locked = {i.source: i for i in lock.images} if lock else {}
    recorded = {v.subject: v for v in lock.verifications} if lock else {}
    states = checked if checked is not None else (image_signatures(lock) if lock else {})
    kinds = _artifact_kinds(lock)
    moved = {c.new for c in diff.changed} if diff else set()
    added = set(diff.added) if diff else set()
    out = []
    for img in plan.images:
        li = locked.get(img.source)
        digest = li.digest if li else img.digest
        size = img.size
        if li is not None:
            size = sum(sizes.get(d, 0) for d in {li.digest, *li.manifests, *li.blobs})
        record = next((recorded[d] for d in [digest or "", *(li.manifests if li else [])] if d in recorded), None)
        art = kinds.get(digest or "", set())
        new = img.source in added or any(m.startswith(img.source) and digest and m.endswith(digest) for m in moved)
        state = states.get(img.source, ImageSignature(ABSENT, "none carried"))
        out.append(ReportImage(
            source=img.source, digest=digest, destination=li.destination if li else img.destination,
            component=img.component, reason=img.reason, size=size,
            platforms=list(li.platforms if li else img.platforms),
            signature=state.state, signature_detail=state.detail,
            key_fingerprint=state.key_fingerprint or None, identity=state.identity or None,
            recorded={"key_fingerprint": record.key_fingerprint, "identity": record.identity,
                      "verified_at": record.verified_at} if record else None,
            sbom="sbom" in art, attestation="attestation" in art, new=new))
    return out


def _charts(lock: Lock | None) -> list[dict[str, str]]:
    return [{"name": c.name, "version": c.version, "tag": c.tag, "digest": c.digest,
             "repository": c.repository or ""} for c in (lock_charts(lock) if lock else [])]


def _differential(lock: Lock | None) -> dict[str, Any] | None:
    """A differential bundle needs what an earlier bundle (or the registry) already delivered."""
    if lock is None or not (lock.depends_on or lock.omitted):
        return None
    return {"needs": list(lock.depends_on), "carried_bytes": sum(b.size for b in lock.blobs),
            "omitted_bytes": sum(b.size for b in lock.omitted), "omitted_blobs": len(lock.omitted)}


def _lock_signature(lock: Lock | None, carried: bool, signed: Any) -> LockSignature:
    if signed is not None:           # checked by this run (mirrorkit.trust.bundlesig.SignedLock)
        return LockSignature(VERIFIED, signed.signer.fingerprint, signed.signer.key_type, signed.signed_at or None)
    claim = lock.signing if lock else None
    if carried or claim is not None:
        return LockSignature(PRESENT, claim.key_fingerprint if claim else None, claim.key_type if claim else None,
                             claim.signed_at if claim else None)
    return LockSignature(ABSENT)


def make_report(source: str, since: str | None = None, verify_keys: list[PublicKey] | None = None,
                bundle_keys: list[str] | None = None) -> Report:
    """Load, verify (for a bundle, every byte), compare with ``since``, and gather the report's facts.

    ``bundle_keys``: the lock's signature is checked first, before anything else of the
    bundle is read (a one-line OperationError when it does not hold). ``verify_keys``: the
    images' carried cosign signatures are checked from the bundle's own bytes.
    """
    signed = None
    if bundle_keys:
        from mirrorkit.trust.bundlesig import check_bundle

        signed = check_bundle(source, bundle_keys)
    keys = list(verify_keys or [])
    path = Path(source)
    checked = _Checked(UNCHECKED, "a plan only: no bundle bytes to verify")
    kind = "plan"
    volumes: list[Path] = []
    if _is_bundle(path):
        kind = "bundle"
        volumes = [path] if path.is_dir() else (bundle_volumes(path) or [path])
    elif path.name.endswith(".lock.yaml"):
        kind, volumes = "lock", bundle_volumes(path)
        checked.detail = "a lock without its bundle volumes beside it: bytes not verified"
    if volumes:
        checked = _verify(volumes, keys)
        if signed is not None and checked.lock_sha256 not in (None, signed.lock_sha256):
            raise OperationError(f"{source}: the lock changed after its signature was checked")
    lock = checked.lock
    carried = checked.signature_carried
    if lock is None:
        try:
            plan, lock = load_plan_or_lock(source)
        except MirrorkitError:
            if checked.integrity != DAMAGED:
                raise
            lock_file = _lock_beside(path)
            plan, lock = load_plan_or_lock(lock_file) if lock_file else (Plan(images=[]), None)
        if kind == "lock":
            from mirrorkit.trust.bundlesig import signature_beside

            carried = signature_beside(path).is_file()
    else:
        plan = lock.plan
    diff = compare(load_plan_or_lock(since), (plan, lock)) if since else None
    images = _images(plan, lock, diff, checked.signatures)
    per_component: dict[str, int] = {}
    for img in images:
        per_component[img.component] = per_component.get(img.component, 0) + (img.size or 0)
    vols = [Volume(str(v), _sha256_of(v), _size_of(v)) for v in volumes]
    return Report(source=source, kind=kind, release=plan.release, flavor=plan.flavor, registry=plan.registry,
                  nodes=list(plan.nodes), images=images, volumes=vols, integrity=checked.integrity,
                  integrity_detail=checked.detail, bundle_id=lock.id if lock else None, since=since,
                  since_diff=diff.to_dict() if diff else None,
                  component_bytes=dict(sorted(per_component.items(), key=lambda kv: -kv[1])),
                  lock_signature=_lock_signature(lock, carried, signed),
                  created=lock.created or None if lock else None, generator=lock.generator or None if lock else None,
                  charts=_charts(lock), differential=_differential(lock), keys=[k.fingerprint for k in keys],
                  installer=lock.installer.to_dict() if lock and lock.installer else None)


def _lock_beside(path: Path) -> Path | None:
    for suffix in (".tar.zst", ".tar"):
        if path.name.endswith(suffix):
            candidate = path.with_name(path.name[: -len(suffix)] + ".lock.yaml")
            return candidate if candidate.is_file() else None
    return None


def _sha256_of(volume: Path) -> str | None:
    """The volume's ``.sha256`` digest; a missing or unreadable one is shown as missing, not fatal."""
    try:
        return read_checksum(volume)
    except InputError:
        return None


def _size_of(volume: Path) -> int:
    try:
        return volume.stat().st_size if volume.is_file() else 0
    except OSError:
        return 0


def human(n: int | None) -> str:
    return "unknown" if n is None else progress.human(n)


def render(r: Report, fmt: str) -> str:
    """``json`` (stable for scripts), ``markdown`` or ``html`` (mirrorkit.rewrite.report_html)."""
    if fmt == "json":
        return json.dumps(r.to_dict(), indent=2) + "\n"
    from mirrorkit.rewrite.report_html import render_html, render_markdown

    return render_markdown(r) if fmt == "markdown" else render_html(r)
