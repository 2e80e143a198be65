"""The transfer report: what crosses the air gap, for the person who approves the media.

One self-contained HTML file (inline CSS and SVG, no script, no URL of any kind)
because it is opened behind the gap, often from the very disk it describes.
Every string in it comes from a plan, a lock or a registry, i.e. from untrusted
hands, so every one goes through ``html.escape``. The integrity verdict comes
from the bundle reader's full verification: a report never shows a green summary
over bytes nobody hashed — a damaged bundle is said to be damaged, in red.
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mirrorkit import progress
from mirrorkit.bundle.inputs import load_plan_or_lock
from mirrorkit.bundle.volumes import bundle_volumes, read_checksum
from mirrorkit.diff import Diff, compare
from mirrorkit.errors import InputError, MirrorkitError
from mirrorkit.lock import Lock
from mirrorkit.plan import Plan

VERIFIED, DAMAGED, UNCHECKED = "verified", "damaged", "not checked"


@dataclass
class ReportImage:
    source: str
    digest: str | None
    destination: str | None
    component: str
    reason: str
    size: int | None
    platforms: list[str]
    signature: str                      # "verified" or "unsigned"
    key_fingerprint: str | None = None
    identity: str | None = None
    sbom: bool = False
    attestation: bool = False
    new: bool = False


@dataclass
class Volume:
    name: str
    sha256: str | None
    size: int


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
    integrity: str
    integrity_detail: str
    bundle_id: str | None = None
    since: str | None = None
    since_diff: dict[str, Any] | None = None
    component_bytes: dict[str, int] = field(default_factory=dict)
    installer: dict[str, Any] | None = None   # mirrorkit's offline installer, when the bundle carries one

    @property
    def damaged(self) -> bool:
        return self.integrity == DAMAGED

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_bundle(path: Path) -> bool:
    return path.is_dir() or (path.is_file() and not path.name.endswith((".yaml", ".yml", ".json")))


def _verify(volumes: list[Path]) -> tuple[str, str, Lock | None]:
    from mirrorkit.bundle.reader import BundleReader

    try:
        with BundleReader(volumes) as reader:
            report = reader.verify()
            return VERIFIED, (f"every byte hashed: {report.blobs} blobs, {human(report.bytes)} in "
                              f"{report.volumes} volume(s), all matching the lock"), reader.lock
    except MirrorkitError as exc:
        return DAMAGED, str(exc), None


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


def _images(plan: Plan, lock: Lock | None, diff: Diff | None) -> list[ReportImage]:
    sizes = {b.digest: b.size for b in (lock.blobs + lock.omitted)} if lock else {}
    locked = {i.source: i for i in lock.images} if lock else {}
    verified = {v.subject: v for v in lock.verifications} if lock else {}
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
        v = verified.get(digest or "")
        art = kinds.get(digest or "", set())
        new = img.source in added or any(m.startswith(img.source) and digest and m.endswith(digest) for m in moved)
        out.append(ReportImage(
            source=img.source, digest=digest, destination=li.destination if li else img.destination,
            component=img.component, reason=img.reason, size=size,
            platforms=list(li.platforms if li else img.platforms),
            signature="verified" if v else "unsigned",
            key_fingerprint=v.key_fingerprint if v else None,
            identity=v.identity if v else None,
            sbom="sbom" in art, attestation="attestation" in art, new=new))
    return out


def make_report(source: str, since: str | None = None) -> Report:
    """Load, verify (for a bundle, every byte), compare with ``since``, and gather the report's facts."""
    path = Path(source)
    integrity, detail, kind = UNCHECKED, "a plan only: no bundle bytes to verify", "plan"
    volumes: list[Path] = []
    bundle_id = None
    if _is_bundle(path):
        kind = "bundle"
        volumes = [path] if path.is_dir() else (bundle_volumes(path) or [path])
    elif path.name.endswith(".lock.yaml"):
        kind, volumes = "lock", bundle_volumes(path)
        detail = "a lock without its bundle volumes beside it: bytes not verified"
    lock: Lock | None = None
    if volumes:
        integrity, detail, lock = _verify(volumes)
    if lock is None:
        try:
            plan, lock = load_plan_or_lock(source)
        except MirrorkitError:
            if integrity != DAMAGED:
                raise
            lock_file = _lock_beside(path)
            plan, lock = load_plan_or_lock(lock_file) if lock_file else (Plan(images=[]), None)
    else:
        plan = lock.plan
    bundle_id = lock.id if lock else None
    diff = compare(load_plan_or_lock(since), (plan, lock)) if since else None
    images = _images(plan, lock, diff)
    per_component: dict[str, int] = {}
    for img in images:
        per_component[img.component] = per_component.get(img.component, 0) + (img.size or 0)
    vols = [Volume(str(v), _sha256_of(v), _size_of(v)) for v in volumes]
    return Report(source=source, kind=kind, release=plan.release, flavor=plan.flavor, registry=plan.registry,
                  nodes=list(plan.nodes), images=images, volumes=vols, integrity=integrity,
                  integrity_detail=detail, bundle_id=bundle_id, since=since,
                  since_diff=diff.to_dict() if diff else None,
                  component_bytes=dict(sorted(per_component.items(), key=lambda kv: -kv[1])),
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


# ---- rendering ------------------------------------------------------------------------------------

def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def human(n: int | None) -> str:
    return "unknown" if n is None else progress.human(n)


CSS = """
body{font:13px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;color:#1d2433;margin:24px auto;max-width:980px;
padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:22px 0 8px;border-bottom:1px solid #d7dce5}
.sub{color:#5b6475}.mono,code{font-family:'DejaVu Sans Mono',Menlo,Consolas,monospace;font-size:11px;
overflow-wrap:anywhere}
.verdict{padding:10px 14px;border-radius:6px;font-weight:600;margin:14px 0}
.ok{background:#e5f5ea;color:#135c2c;border:1px solid #7cc795}
.bad{background:#fde8e8;color:#b00020;border:2px solid #b00020}
.warn{background:#fff6e0;color:#7a5200;border:1px solid #e3b34c}
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:3px 8px 3px 0;vertical-align:top}
th{color:#5b6475;font-weight:600;white-space:nowrap}
.card{border:1px solid #d7dce5;border-radius:6px;padding:8px 12px;margin:8px 0;break-inside:avoid}
.card h3{font-size:13px;margin:0 0 4px}.tag{display:inline-block;border-radius:3px;padding:0 6px;margin-left:6px;
font-size:11px;font-weight:600}
.t-ok{background:#e5f5ea;color:#135c2c}.t-no{background:#eef0f4;color:#5b6475}.t-new{background:#e3ecff;
color:#1f4fbf}
.card th{width:110px}
"""


def _chart(component_bytes: dict[str, int]) -> str:
    """Bytes per component as horizontal bars: inline SVG, no script, no external reference."""
    items = [(c, b) for c, b in component_bytes.items()]
    if not items:
        return "<p class='sub'>no sizes recorded</p>"
    top = max(b for _, b in items) or 1
    row, label_w, bar_w = 20, 230, 520
    height = row * len(items) + 8
    parts = [f"<svg role='img' aria-label='bytes per component' width='{label_w + bar_w + 110}' "
             f"height='{height}' viewBox='0 0 {label_w + bar_w + 110} {height}'>"]
    for n, (component, size) in enumerate(items):
        y = 4 + n * row
        w = max(1, round(bar_w * size / top))
        parts.append(f"<text x='{label_w - 6}' y='{y + 13}' text-anchor='end' font-size='11'>{_e(component)}</text>")
        parts.append(f"<rect x='{label_w}' y='{y + 2}' width='{w}' height='{row - 6}' fill='#4c78c8'/>")
        parts.append(f"<text x='{label_w + w + 6}' y='{y + 13}' font-size='11'>{_e(human(size))}</text>")
    parts.append("</svg>")
    return "".join(parts)


def _verdict(r: Report) -> str:
    if r.integrity == VERIFIED:
        return f"<div class='verdict ok'>Bundle verified: {_e(r.integrity_detail)}</div>"
    if r.integrity == DAMAGED:
        return (f"<div class='verdict bad'>BUNDLE DAMAGED — do not approve these media. "
                f"{_e(r.integrity_detail)}</div>")
    return f"<div class='verdict warn'>Not verified: {_e(r.integrity_detail)}</div>"


def _image_card(img: ReportImage) -> str:
    sig = ("<span class='tag t-ok'>signed, verified</span>" if img.signature == "verified"
           else "<span class='tag t-no'>unsigned</span>")
    new = "<span class='tag t-new'>new</span>" if img.new else ""
    rows = [("source", img.source), ("digest", img.digest or "not resolved"),
            ("destination", img.destination or "—"), ("why", img.reason), ("size", human(img.size)),
            ("platforms", ", ".join(img.platforms) or "—")]
    if img.signature == "verified":
        rows.append(("signature", f"verified under key {img.key_fingerprint or '?'}"
                     + (f" for {img.identity}" if img.identity else "")))
    else:
        rows.append(("signature", "unsigned (no verified signature recorded)"))
    rows.append(("SBOM", "present" if img.sbom else "none"))
    rows.append(("attestation", "present" if img.attestation else "none"))
    body = "".join(f"<tr><th>{_e(k)}</th><td class='mono'>{_e(v)}</td></tr>" for k, v in rows)
    return f"<div class='card'><h3>{_e(img.component)}{sig}{new}</h3><table>{body}</table></div>"


def render_html(r: Report) -> str:
    total = sum(i.size or 0 for i in r.images)
    signed = sum(1 for i in r.images if i.signature == "verified")
    title = f"Transfer report: GPU Operator {r.release}" if r.release else "Transfer report"
    out = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
           "<meta name='viewport' content='width=device-width, initial-scale=1'>",
           f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
           f"<h1>{_e(title)}</h1>",
           f"<div class='sub'>{_e(r.kind)} <span class='mono'>{_e(r.source)}</span>"
           + (f" — bundle id <span class='mono'>{_e(r.bundle_id)}</span>" if r.bundle_id else "") + "</div>",
           _verdict(r), "<h2>Release and nodes</h2><table>",
           f"<tr><th>release</th><td>{_e(r.release or 'none (an image set)')}</td></tr>",
           f"<tr><th>flavor</th><td>{_e(r.flavor or '—')}</td></tr>",
           f"<tr><th>private registry</th><td class='mono'>{_e(r.registry or '—')}</td></tr>",
           f"<tr><th>images</th><td>{len(r.images)} ({_e(human(total))} before blob sharing), "
           f"{signed} with a verified signature</td></tr>"]
    for node in r.nodes:
        out.append(f"<tr><th>GPU node</th><td>{_e(node.get('name') or 'node')}: {_e(node.get('os'))}, kernel "
                   f"{_e(node.get('kernel') or '?')}, {_e(node.get('arch'))}</td></tr>")
    if r.installer:
        kit = r.installer
        out.append(f"<tr><th>mirrorkit installer</th><td>mirrorkit {_e(kit['version'])} for CPython "
                   f"{_e(', '.join(kit['pythons']))} on {_e(', '.join(kit['platforms']))} "
                   f"({_e(human(kit['size']))}, <span class='mono'>{_e(kit['digest'])}</span>)</td></tr>")
    out.append("</table>")
    if r.volumes:
        out.append("<h2>Bundle volumes</h2><table><tr><th>volume</th><th>size</th><th>sha256</th></tr>")
        for v in r.volumes:
            out.append(f"<tr><td class='mono'>{_e(Path(v.name).name)}</td><td>{_e(human(v.size))}</td>"
                       f"<td class='mono'>{_e(v.sha256 or 'no .sha256 file')}</td></tr>")
        out.append("</table>")
    if r.since_diff is not None:
        d = r.since_diff
        out.append(f"<h2>New against <span class='mono'>{_e(r.since)}</span></h2>")
        if not (d["added"] or d["removed"] or d["changed"]):
            out.append("<p>nothing: the same images as the previous bundle</p>")
        out += [f"<div class='mono'>+ {_e(ref)}</div>" for ref in d["added"]]
        out += [f"<div class='mono'>− {_e(ref)}</div>" for ref in d["removed"]]
        out += [f"<div class='mono'>{_e(c['component'])}: {_e(c['from'])} → {_e(c['to'])}</div>"
                for c in d["changed"]]
    out += ["<h2>Bytes per component</h2>", _chart(r.component_bytes), "<h2>Images</h2>"]
    out += [_image_card(i) for i in r.images]
    out.append("<p class='sub'>Written by mirrorkit report. Sizes are per image, before blob sharing.</p>")
    out.append("</body></html>\n")
    return "\n".join(out)


def render(r: Report, fmt: str) -> str:
    return json.dumps(r.to_dict(), indent=2) + "\n" if fmt == "json" else render_html(r)
