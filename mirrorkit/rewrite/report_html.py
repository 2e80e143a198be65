"""The transfer report rendered for people: one self-contained HTML file, or Markdown for a ticket.

The HTML has inline CSS and SVG, no script and no URL of any kind, because it is opened
behind the gap, often from the very disk it describes. Every string in it comes from a
plan, a lock or a registry, i.e. from untrusted hands, so every one goes through
``html.escape`` (and, in Markdown, through ``_md``). The verdict is green only when this
run hashed every byte against a lock whose signature it verified (``--bundle-key``); a
damaged bundle is said to be damaged, in red; anything the lock merely claims is
labelled as a claim or a record.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

from mirrorkit.rewrite.report import Report, ReportImage, human
from mirrorkit.trust.carried import ABSENT, INVALID, PRESENT, VERIFIED

SIGNATURE_TAGS = {VERIFIED: ("t-ok", "signed, verified by this report"),
                  PRESENT: ("t-no", "signatures present, not verified"),
                  ABSENT: ("t-no", "no signature carried"),
                  INVALID: ("t-bad", "signature INVALID")}


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


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
.red{color:#b00020;font-weight:700}
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:3px 8px 3px 0;vertical-align:top}
th{color:#5b6475;font-weight:600;white-space:nowrap}
.card{border:1px solid #d7dce5;border-radius:6px;padding:8px 12px;margin:8px 0;break-inside:avoid}
.card h3{font-size:13px;margin:0 0 4px}.tag{display:inline-block;border-radius:3px;padding:0 6px;margin-left:6px;
font-size:11px;font-weight:600}
.t-ok{background:#e5f5ea;color:#135c2c}.t-no{background:#eef0f4;color:#5b6475}.t-new{background:#e3ecff;
color:#1f4fbf}.t-bad{background:#fde8e8;color:#b00020}
.card th{width:110px}
.approval td{border-bottom:1px solid #1d2433;height:28px;width:70%}
"""


def _chart(component_bytes: dict[str, int]) -> str:
    """Bytes per component as horizontal bars: inline SVG, no script, no external reference."""
    items = list(component_bytes.items())
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


# ---- the words, shared by both renderers ----------------------------------------------------------

def verdict(r: Report) -> tuple[str, str]:
    """(css class, text) of the one-line verdict: green only for bytes hashed under a verified lock signature."""
    if r.damaged:
        return "bad", f"BUNDLE DAMAGED — do not approve these media. {r.integrity_detail}"
    if r.authenticated:
        sig = r.lock_signature
        return "ok", (f"Bundle verified: {r.integrity_detail}; the lock's signature verified by this report under "
                      f"key {sig.key_fingerprint} ({sig.key_type})")
    if r.integrity == VERIFIED:
        return "warn", (f"Bytes match the lock ({r.integrity_detail}), but the lock itself is not authenticated: "
                        + ("its signature was not checked (give --bundle-key KEY.pub)"
                           if r.lock_signature.state == PRESENT else "it is not signed")
                        + ". Its .sha256 files travel with it and prove nothing against someone who could change "
                          "both.")
    return "warn", f"Not verified: {r.integrity_detail}"


def lock_signature_text(r: Report) -> str:
    sig = r.lock_signature
    if sig.state == VERIFIED:
        return (f"signed by key {sig.key_fingerprint} ({sig.key_type})"
                + (f" at {sig.signed_at}" if sig.signed_at else "") + "; verified by this report")
    if sig.state == PRESENT:
        claim = (f", claiming key {sig.key_fingerprint} ({sig.key_type}) at {sig.signed_at}"
                 if sig.key_fingerprint else "")
        return f"signature carried{claim}; NOT verified by this report (give --bundle-key KEY.pub)"
    return "not signed"


def image_signature_text(img: ReportImage) -> str:
    if img.signature == VERIFIED:
        return (f"verified by this report under key {img.key_fingerprint or '?'}"
                + (f" for {img.identity}" if img.identity else ""))
    if img.signature == INVALID:
        return f"INVALID: {img.signature_detail}"
    if img.signature == PRESENT:
        return img.signature_detail or "signatures present, not verified"
    return "none carried"


def record_text(img: ReportImage) -> str | None:
    """The lock's pull-time record, labelled as what it is."""
    rec = img.recorded
    if not rec:
        return None
    return (f"recorded at pull time ({rec['verified_at']}): key {rec['key_fingerprint']}"
            + (f" for {rec['identity']}" if rec.get("identity") else "") + "; a record in the lock, not checked "
            "by this report")


def differential_text(r: Report) -> str | None:
    d = r.differential
    if not d:
        return None
    needs = "; ".join(d["needs"]) or "blobs the registry already holds"
    return (f"Differential: needs {needs} at the mirror before this bundle is pushed. Carries "
            f"{human(d['carried_bytes'])}; leaves out {d['omitted_blobs']} blob(s), {human(d['omitted_bytes'])}")


def _written_by(r: Report) -> str:
    return r.generator or "unknown"


# ---- HTML -----------------------------------------------------------------------------------------

def _image_card(img: ReportImage) -> str:
    css, label = SIGNATURE_TAGS.get(img.signature, SIGNATURE_TAGS[ABSENT])
    sig = f"<span class='tag {css}'>{_e(label)}</span>"
    new = "<span class='tag t-new'>new</span>" if img.new else ""
    rows = [("source", img.source), ("digest", img.digest or "not resolved"),
            ("destination", img.destination or "—"), ("why", img.reason), ("size", human(img.size)),
            ("platforms", ", ".join(img.platforms) or "—"), ("signature", image_signature_text(img))]
    record = record_text(img)
    if record:
        rows.append(("lock record", record))
    rows.append(("SBOM", "present" if img.sbom else "none"))
    rows.append(("attestation", "present" if img.attestation else "none"))
    body = "".join(f"<tr><th>{_e(k)}</th><td class='mono'>{_e(v)}</td></tr>" for k, v in rows)
    return f"<div class='card'><h3>{_e(img.component)}{sig}{new}</h3><table>{body}</table></div>"


def _packages_html(r: Report) -> list[str]:
    """The driver packages section (issue 17, with the packages work) renders here."""
    return []


def _approval_html() -> list[str]:
    return ["<h2>Approval</h2>",
            "<p class='sub'>Approve only over a green verdict: bytes hashed under a lock signature this report "
            "verified.</p>",
            "<table class='approval'><tr><th>reviewer</th><td></td></tr><tr><th>date</th><td></td></tr>"
            "<tr><th>decision</th><td>&#9744; approved &nbsp; &#9744; rejected</td></tr>"
            "<tr><th>signature</th><td></td></tr></table>"]


def render_html(r: Report) -> str:
    total = sum(i.size or 0 for i in r.images)
    checked = sum(1 for i in r.images if i.signature == VERIFIED)
    present = sum(1 for i in r.images if i.signature == PRESENT)
    title = f"Transfer report: GPU Operator {r.release}" if r.release else "Transfer report"
    css, text = verdict(r)
    lock_sig = lock_signature_text(r)
    lock_sig_html = (f"<span class='red'>{_e(lock_sig)}</span>" if r.lock_signature.state == ABSENT
                     else _e(lock_sig))
    out = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
           "<meta name='viewport' content='width=device-width, initial-scale=1'>",
           f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
           f"<h1>{_e(title)}</h1>",
           f"<div class='sub'>{_e(r.kind)} <span class='mono'>{_e(r.source)}</span>"
           + (f" — bundle id <span class='mono'>{_e(r.bundle_id)}</span>" if r.bundle_id else "") + "</div>",
           f"<div class='verdict {css}'>{_e(text)}</div>"]
    banner = differential_text(r)
    if banner:
        out.append(f"<div class='verdict warn'>{_e(banner)}</div>")
    out += ["<h2>Bundle, release and nodes</h2><table>",
            f"<tr><th>lock signature</th><td class='mono'>{lock_sig_html}</td></tr>",
            f"<tr><th>bundle created</th><td>{_e(r.created or 'unknown')}</td></tr>",
            f"<tr><th>written by</th><td>{_e(_written_by(r))}</td></tr>",
            f"<tr><th>release</th><td>{_e(r.release or 'none (an image set)')}</td></tr>",
            f"<tr><th>flavor</th><td>{_e(r.flavor or '—')}</td></tr>",
            f"<tr><th>private registry</th><td class='mono'>{_e(r.registry or '—')}</td></tr>",
            f"<tr><th>images</th><td>{len(r.images)} ({_e(human(total))} before blob sharing); signatures: "
            f"{checked} verified by this report, {present} present but not verified</td></tr>"]
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
    if r.charts:
        out.append("<h2>Helm charts</h2><table><tr><th>chart</th><th>version</th><th>digest</th></tr>")
        for c in r.charts:
            out.append(f"<tr><td class='mono'>{_e(c['name'])}</td><td>{_e(c['version'])}</td>"
                       f"<td class='mono'>{_e(c['digest'])}</td></tr>")
        out.append("</table>")
    out += _packages_html(r)
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
    out += _approval_html()
    out.append("<p class='sub'>Written by mirrorkit report. Sizes are per image, before blob sharing. This report "
               "states only what it checked itself.</p>")
    out.append("</body></html>\n")
    return "\n".join(out)


# ---- Markdown -------------------------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+!|~])")


def _md(value: Any) -> str:
    """Untrusted text as inert Markdown: one line, Markdown and HTML characters escaped."""
    text = " ".join(str("" if value is None else value).split())
    return _MD_SPECIAL.sub(r"\\\1", html.escape(text, quote=False))


def _code(value: Any) -> str:
    """Untrusted text as a code span (escapes are literal there: backticks and line breaks go instead)."""
    text = " ".join(str("" if value is None else value).replace("`", "'").split())
    return f"`{text}`"


def render_markdown(r: Report) -> str:
    css, text = verdict(r)
    mark = {"ok": "✅", "bad": "⛔", "warn": "⚠️"}[css]
    title = f"Transfer report: GPU Operator {r.release}" if r.release else "Transfer report"
    out = [f"# {_md(title)}", "", f"{_md(r.kind)} {_code(r.source)}"
           + (f" — bundle id {_code(r.bundle_id)}" if r.bundle_id else ""), "", f"> {mark} **{_md(text)}**", ""]
    banner = differential_text(r)
    if banner:
        out += [f"> ⚠️ {_md(banner)}", ""]
    lock_sig = lock_signature_text(r)
    out += ["| | |", "|---|---|",
            "| lock signature | " + (f"**{_md(lock_sig.upper())}**" if r.lock_signature.state == ABSENT
                                     else _md(lock_sig)) + " |",
            f"| bundle created | {_md(r.created or 'unknown')} |", f"| written by | {_md(_written_by(r))} |",
            f"| release | {_md(r.release or 'none (an image set)')} |",
            f"| private registry | {_md(r.registry or '—')} |", ""]
    if r.volumes:
        out += ["## Bundle volumes", "", "| volume | size | sha256 |", "|---|---|---|"]
        out += [f"| {_md(Path(v.name).name)} | {_md(human(v.size))} | {_md(v.sha256 or 'no .sha256 file')} |"
                for v in r.volumes]
        out.append("")
    if r.charts:
        out += ["## Helm charts", "", "| chart | version | digest |", "|---|---|---|"]
        out += [f"| {_md(c['name'])} | {_md(c['version'])} | {_md(c['digest'])} |" for c in r.charts]
        out.append("")
    out += ["## Images", "", "| component | source | digest | signature |", "|---|---|---|---|"]
    for img in r.images:
        sig = image_signature_text(img)
        record = record_text(img)
        out.append(f"| {_md(img.component)} | {_md(img.source)} | {_md(img.digest or 'not resolved')} | "
                   f"{_md(sig + ('; ' + record if record else ''))} |")
    out += ["", "## Approval", "", "| | |", "|---|---|", "| reviewer | |", "| date | |",
            "| decision | ☐ approved ☐ rejected |", ""]
    return "\n".join(out)
