"""report: a real bundle pulled from a real registry, rendered by a real headless Chromium with networking blocked.

The HTML must stand alone (no script, no URL, no external resource), escape every
string that came from a plan or lock, carry every reference into the PDF a
reviewer signs, and say "damaged" in red over a bundle whose bytes do not match.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result
from kit.images import make_image, make_index, make_layer
from kit.push import push_image
from kit.registryd import RegistryServer

from mirrorkit.cli.main import main
from mirrorkit.rewrite.report import Report, ReportImage
from mirrorkit.rewrite.report_html import render_html

HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>&amp;\"'"
REFS = {
    "nvidia/gpu-operator:v23.9.2": ("operator", 64 << 10),
    "nvidia/driver:550.127.05-ubuntu22.04": ("driver", 160 << 10),
    "nvidia/k8s/container-toolkit:v1.14.6-ubuntu20.04": ("toolkit", 32 << 10),
}


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def bundle(registry_factory: Callable[..., RegistryServer], tmp_path: Path) -> Path:
    upstream = registry_factory()
    for ref, (name, size) in REFS.items():
        repo, tag = ref.split(":")
        push_image(upstream.url, repo, tag, make_index([
            make_image(f"{name}/{a}", [make_layer(f"base/{a}", 16 << 10), make_layer(f"{name}/{a}", size)],
                       ("linux", a)) for a in ("amd64", "arm64")]))
    plan = tmp_path / "plan.yaml"
    args = ["plan", "--registry", "registry.local:5000/kse", "--resolve", "-o", str(plan),
            "--source-endpoint", f"nvcr.io=http://{upstream.host}"]
    for ref in REFS:
        args += ["--image", f"nvcr.io/{ref}"]
    assert cli(*args).exit_code == 0
    data = yaml.safe_load(plan.read_text())
    for img in data["images"]:
        img["component"] = REFS[img["source"].removeprefix("nvcr.io/")][0]
    data["images"][0]["reason"] = HOSTILE                   # a plan from untrusted hands
    plan.write_text(yaml.safe_dump(data, sort_keys=False))
    out = tmp_path / "gpu.tar"
    res = cli("pull-bundle", str(plan), "-o", str(out), "--source-endpoint", f"nvcr.io=http://{upstream.host}")
    assert res.exit_code == 0, res.output
    return out


def chromium(html: Path, tmp: Path) -> tuple[Path, Path, str]:
    """Screenshot and PDF with every host name unresolvable and a verbose log to check for requests."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "chromium is not installed (apt-get install chromium; make test installs it)"
    png, pdf, log = tmp / "report.png", tmp / "report.pdf", tmp / "chrome.log"
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-default-apps",
              f"--user-data-dir={tmp / 'profile'}", '--host-resolver-rules=MAP * ~NOTFOUND',
              "--enable-logging=stderr", "--v=1", "--window-size=1100,1400"]
    for extra in ([f"--screenshot={png}"], [f"--print-to-pdf={pdf}", "--no-pdf-header-footer"]):
        proc = subprocess.run([*common, *extra, html.as_uri()], capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL, check=False)
        log.write_text(log.read_text() + proc.stderr if log.exists() else proc.stderr)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return png, pdf, log.read_text()


class _Markup(HTMLParser):
    """Tags, attributes and style text as a browser would see them (escaped text is only text)."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attrs: set[str] = set()
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attrs.update(name for name, _ in attrs)
        self.styles += [value or "" for name, value in attrs if name == "style"]
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.styles.append(data)


BROWSER_OWN = re.compile(r"^https?://([a-z0-9-]+\.)*(google\.com|googleapis\.com|gvt1\.com)(/|$)")


def page_requests(log: str) -> list[str]:
    """URLs Chromium's network stack was asked for, minus the browser's own update and account pings."""
    urls = re.findall(r"NotifyBeforeURLRequest: (\S+)", log)
    return sorted({u for u in urls if u.startswith(("http", "ws", "ftp")) and not BROWSER_OWN.match(u)})


def assert_self_contained(text: str) -> None:
    markup = _Markup()
    markup.feed(text)
    assert not markup.tags & {"script", "link", "img", "iframe", "object", "embed", "image", "use", "base",
                              "audio", "video", "source", "form", "meta" if "http-equiv" in text else "x"}
    assert not {a for a in markup.attrs if a in ("src", "href", "xlink:href", "srcset", "action")
                or a.startswith("on")}, markup.attrs
    assert not any("url(" in s or "@import" in s for s in markup.styles)
    assert "://" not in text and not re.search(r"['\"(]//", text), "no URL of any kind"


def test_report_of_a_verified_bundle_renders_offline_with_every_reference(bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    res = cli("report", str(bundle), "-o", str(out))
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert_self_contained(text)
    # every byte hashed, but the lock is not signed: amber, never "Bundle verified"
    assert "Bytes match the lock" in text and "it is not signed" in text and "verdict warn" in text
    assert "Bundle verified" not in text and "verdict ok" not in text
    assert "<span class='red'>not signed</span>" in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;&amp;amp;&quot;&#x27;" in text
    assert "<svg" in text and "bytes per component" in text
    data = json.loads(cli("report", str(bundle), "--format", "json").stdout)
    assert data["integrity"] == "verified" and len(data["images"]) == 3
    assert data["volumes"][0]["sha256"] == (bundle.parent / "gpu.tar.sha256").read_text().split()[0]
    assert all(i["signature"] == "absent" and i["size"] > 0 for i in data["images"])
    assert data["lock_signature"]["state"] == "absent" and data["authenticated"] is False
    assert data["generator"] == "mirrorkit 0.1.0" and data["created"]
    assert data["component_bytes"]["driver"] > data["component_bytes"]["toolkit"]

    png, pdf, log = chromium(out, tmp_path)
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shutil.copy(png, "/tmp/report.png")
    assert page_requests(log) == []
    canary = tmp_path / "canary" / "canary.html"
    canary.parent.mkdir()
    canary.write_text("<p>x</p><img src='http://report-canary.invalid/pixel.png'>")
    assert page_requests(chromium(canary, canary.parent)[2]) == ["http://report-canary.invalid/pixel.png"], \
        "the request check sees a page's request"
    pdf_text = subprocess.run(["pdftotext", "-enc", "UTF-8", str(pdf), "-"], capture_output=True, text=True,
                              check=True).stdout
    flat = re.sub(r"\s+", "", pdf_text)
    for img in data["images"]:
        for key in ("source", "digest", "destination"):
            assert img[key] in flat, (key, img[key])
    assert data["volumes"][0]["sha256"] in flat
    assert "<script>alert(1)</script>" in pdf_text, "the hostile text shows as text, not markup"


def test_report_since_marks_what_is_new(bundle: Path, tmp_path: Path) -> None:
    lock = yaml.safe_load((bundle.parent / "gpu.lock.yaml").read_text())
    old = lock["plan"]
    old["images"] = [i for i in old["images"] if "driver" not in i["source"]]
    old["images"][0]["source"] = old["images"][0]["source"].replace("v23.9.2", "v23.6.2")
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(old))
    data = json.loads(cli("report", str(bundle), "--since", str(tmp_path / "old.yaml"), "--format", "json").stdout)
    new = sorted(i["source"] for i in data["images"] if i["new"])
    assert new == ["nvcr.io/nvidia/driver:550.127.05-ubuntu22.04", "nvcr.io/nvidia/gpu-operator:v23.9.2"]
    assert {"component": "operator", "from": "v23.6.2", "to": "v23.9.2"} in data["since_diff"]["changed"]
    same = cli("diff", str(bundle), str(bundle.parent / "gpu.lock.yaml"), "--format", "json", "--exit-code")
    assert same.exit_code == 0 and json.loads(same.stdout) == {"added": [], "removed": [], "changed": []}


def test_report_of_a_plan_is_neither_green_nor_red(bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "plan.html"
    res = cli("report", str(bundle.parent / "plan.yaml"), "-o", str(out))
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert "verdict warn" in text and "Not verified: a plan only" in text
    assert "verdict ok" not in text and "verdict bad" not in text


def test_report_of_a_damaged_bundle_says_so_in_red_and_exits_1(bundle: Path, tmp_path: Path) -> None:
    with tarfile.open(bundle) as tar:
        member = max(tar.getmembers(), key=lambda m: m.size)
    with open(bundle, "r+b") as f:
        f.seek(member.offset_data + member.size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    out = tmp_path / "report.html"
    res = cli("report", str(bundle), "-o", str(out))
    assert res.exit_code == 1
    assert "damaged" in res.stderr and "Traceback" not in res.output
    text = out.read_text()
    assert "verdict bad" in text and "BUNDLE DAMAGED" in text
    assert "verdict ok" not in text and "Bundle verified" not in text
    assert ".bad{background:#fde8e8;color:#b00020" in text


def test_signature_and_artifact_state_are_escaped_too() -> None:
    img = ReportImage(source="nvcr.io/nvidia/driver:550", digest="sha256:" + "a" * 64, destination=None,
                      component="driver", reason="r", size=1, platforms=["linux/amd64"], signature="verified",
                      key_fingerprint="sha256:" + "b" * 64, identity=HOSTILE, sbom=True)
    report = Report(source=HOSTILE, kind="lock", release=HOSTILE, flavor=None, registry=None,
                    nodes=[{"name": HOSTILE, "os": "ubuntu22.04", "kernel": "5.15", "arch": "amd64"}],
                    images=[img], volumes=[], integrity="not checked", integrity_detail=HOSTILE,
                    component_bytes={HOSTILE: 5})
    text = render_html(report)
    assert_self_contained(text)
    assert text.count("&lt;script&gt;") == 8   # title, heading, release, source, node, detail, identity, chart
    assert "verified by this report under key sha256:" + "b" * 64 in text
    assert "SBOM</th><td class='mono'>present" in text
