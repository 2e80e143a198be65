"""The whole mission, as `make demo` runs it: plan -> pull-bundle --verify-key -> push-bundle --verify-key ->
verify --verify-key -> rewrite-config (Kyverno and containers-policy too) -> runbook -> a real containerd pulls
the upstream names through the emitted hosts.toml -> report -> diff of two releases' plans. Besides: a Rocky
node compiled at run time (pull-bundle --package-source -> push-bundle --packages-dir -> driver-repo -> the
real dnf), and ``mirrorkit serve`` answering a real containerd for the bundle itself."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import yaml
from kit import rpmrepo

ROOT = Path(__file__).resolve().parent.parent


def servers_under(folder: Path) -> list[str]:
    """Registry and containerd processes whose configs live under folder (the demo's own TMPDIR)."""
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if str(folder) in line and not line.startswith("ps ")]


def test_demo_end_to_end(tmp_path: Path) -> None:
    # short, because containerd's unix socket path must fit in 108 bytes
    scratch = Path(tempfile.mkdtemp(prefix="mkd-", dir="/tmp"))
    env = dict(os.environ, MIRRORKIT_DEMO_OUT=str(tmp_path / "out"), TMPDIR=str(scratch))
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py")], capture_output=True, text=True,
                          env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("ctr pulled ") == 13            # 12 from the private registry, 1 through serve
    assert "13 of 13 images and charts present with the expected digest" in proc.stdout
    values = yaml.safe_load((tmp_path / "out" / "values-airgap.yaml").read_text())
    assert values["driver"]["usePrecompiled"] is True and values["driver"]["version"] == "550"
    ext = yaml.safe_load((tmp_path / "out" / "extension-config.yaml").read_text())
    assert ext["gpu-operator"]["dcgmExporter"]["serviceMonitor"]["honorLabels"] is True
    hosts = tomllib.loads((tmp_path / "out" / "certs.d" / "nvcr.io" / "hosts.toml").read_text())
    assert hosts["server"].startswith("http://127.0.0.1:")
    assert "helm install --wait gpu-operator oci://127.0.0.1:" in (tmp_path / "out" / "helm-install.sh").read_text()
    runbook = (tmp_path / "out" / "RUNBOOK.md").read_text()
    assert "helm install --wait gpu-operator oci://127.0.0.1:" in runbook and "/kse/charts/gpu-operator" in runbook
    # signatures: verified on the connected side, offline from the bundle, and at the mirror
    assert "carried 36 signature artifacts" in proc.stdout and "pushed 36 signature artifacts" in proc.stdout
    assert proc.stdout.count("signatures verified for 12 digests under sha256:") == 4   # both bundles, both sides
    assert "12 of 12 image digests carry a valid signature" in proc.stdout
    lock = yaml.safe_load((tmp_path / "out" / "gpu-operator-v23.9.2.lock.yaml").read_text())
    assert len(lock["verifications"]) == 12
    kyverno = yaml.safe_load((tmp_path / "out" / "verify-images.yaml").read_text())
    assert kyverno["kind"] == "ClusterPolicy"
    assert "BEGIN PUBLIC KEY" in json.dumps(kyverno)
    policy = json.loads((tmp_path / "out" / "containers-policy" / "policy.json").read_text())
    assert len(policy["transports"]["docker"]) == 12
    report = (tmp_path / "out" / "report.html").read_text()
    assert report.count("signed, verified") == 12 and "<script" not in report
    # chain of custody: the lock signed at pull, checked before the push and by the report itself
    assert "Bundle verified" in report and (tmp_path / "out" / "gpu-operator-v23.9.2.lock.yaml.sig").is_file()
    assert proc.stdout.count(": signature verified") == 2       # push-bundle's and serve's --bundle-key lines
    assert "9 added, 10 removed, 10 changed" in proc.stdout
    # the Rocky node: its packages carried, laid out, checked, and downloaded by the real dnf (gpgcheck on)
    out = tmp_path / "out"
    rocky_lock = yaml.safe_load((out / "gpu-operator-v23.9.2-rocky8.9.lock.yaml").read_text())
    carried = {f["path"].rsplit("/", 1)[-1].removesuffix(".rpm") for r in rocky_lock["package_repos"]
               for f in r["files"] if f["kind"] == "package"}
    assert carried == rpmrepo.closure(rpmrepo.KERNEL_A)
    assert "26 package files under packages match the bundle" in proc.stdout
    (dnf_line,) = [line for line in proc.stdout.splitlines() if "dnf downloaded " in line]
    assert {n.removesuffix(".rpm") for n in dnf_line.split(": ", 1)[1].split()} == carried
    assert proc.stdout.count("Importing GPG key") >= 2       # dnf checked each repomd.xml.asc ...
    assert "Key imported successfully" in proc.stdout and "Complete!" in proc.stdout   # ... and the rpm headers
    repos = list(yaml.safe_load_all((out / "driver-repo.yaml").read_text()))[0]["data"]
    assert "ubi.repo" in repos and all("gpgcheck=1" in text for name, text in repos.items() if name != "ubi.repo")
    # serve: the bundle answered a real containerd, with the digest the private registry gave, then SIGTERM
    pulled = {line.split()[2]: line.split()[-1] for line in proc.stdout.splitlines()
              if line.strip().startswith("ctr pulled ") and "through mirrorkit serve" not in line}
    (through_serve,) = [line for line in proc.stdout.splitlines() if "through mirrorkit serve" in line]
    assert through_serve.split()[-1] == pulled["nvcr.io/nvidia/gpu-operator:v23.9.2"]
    via_serve = tomllib.loads((out / "certs.d-serve" / "nvcr.io" / "hosts.toml").read_text())["server"]
    assert via_serve.startswith("http://127.0.0.1:") and via_serve.endswith("/v2/kse") and via_serve != hosts["server"]
    assert "GET /v2/kse/nvidia/gpu-operator/manifests/sha256:" in (out / "serve.log").read_text()
    assert "serve stopped on SIGTERM: exit 0" in proc.stdout
    assert servers_under(scratch) == [], "the demo must stop every registry and containerd it started"
    shutil.rmtree(scratch, ignore_errors=True)
