"""mirrorkit crosses the gap with the bundle: built for this machine, carried in a bundle, taken out with tar,
installed with the network unreachable (``unshare -n``), and a real push-bundle run from that install.

The installer is built once for this machine's platform and Python (the full set is measured in
BENCHMARKS.md); the install runs in a new network namespace, where only a down loopback exists,
so any attempt to reach a package index fails. The push then runs from the new install outside
the namespace, against a docker-registry on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import httpx
import pytest
import yaml
from click.testing import CliRunner, Result
from kit.images import make_image, make_layer
from kit.push import push_image

from mirrorkit.cli.main import main
from mirrorkit.errors import InputError
from mirrorkit.lock import Lock, LockBlob, loads_lock
from mirrorkit.plan import Plan

MACHINE = platform.machine()
WHEELHOUSE = Path(__file__).resolve().parents[1] / ".venv" / "wheelhouse"
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith(("MIRRORKIT_", "PYTHON", "VIRTUAL_ENV", "PIP_"))}


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def sh(*argv: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], cwd=cwd, env=env if env is not None else CLEAN_ENV,
                          capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def installer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("installer") / "mirrorkit-installer"
    # the tests reach no package index: the wheels come from the wheelhouse make setup filled
    assert WHEELHOUSE.is_dir(), f"{WHEELHOUSE} is missing: run make setup"
    res = cli("offline-installer", "-o", str(out), "--platform", MACHINE, "--python", PYTHON,
              "--find-links", str(WHEELHOUSE))
    assert res.exit_code == 0, res.output
    assert f"{MACHINE}: " in res.stderr
    return out


def test_installer_from_the_bundle_installs_offline_and_pushes(tmp_path: Path, installer: Path,
                                                               registry_factory) -> None:
    # what the folder holds: every wheel listed once in SHA256SUMS, only this machine's binaries
    sums = dict(reversed(line.split("  ", 1)) for line in (installer / "SHA256SUMS").read_text().splitlines())
    wheels = sorted(p.name for p in (installer / "wheels").iterdir())
    assert {f"wheels/{w}" for w in wheels} | {"install.sh", "installer.json"} == set(sums)
    assert any(w.startswith("mirrorkit-0.") for w in wheels) and any(w.startswith("pip-") for w in wheels)
    tag = f"cp{PYTHON.replace('.', '')}"
    assert any(w.startswith("cryptography-") for w in wheels) and any(f"-{tag}-" in w for w in wheels)
    assert not any("aarch64" in w for w in wheels if MACHINE != "aarch64")
    manifest = json.loads((installer / "installer.json").read_text())
    assert manifest["platforms"] == [MACHINE] and manifest["pythons"] == [PYTHON]

    # a small bundle that carries it
    upstream, private = registry_factory(), registry_factory()
    push_image(upstream.url, "nvidia/gpu-operator", "v1", make_image("op", [make_layer("op", 8 << 10)]))
    plan, bundle = tmp_path / "plan.yaml", tmp_path / "gpu.tar"
    res = cli("plan", "--image", "nvcr.io/nvidia/gpu-operator:v1", "--registry", f"{private.host}/site",
              "-o", str(plan))
    assert res.exit_code == 0, res.output
    res = cli("pull-bundle", str(plan), "-o", str(bundle), "--source-endpoint", f"nvcr.io=http://{upstream.host}",
              "--installer", str(installer), "--format", "json")
    assert res.exit_code == 0, res.output
    entry = json.loads(res.stdout)["installer"]
    assert entry["platforms"] == [MACHINE] and entry["pythons"] == [PYTHON]
    lock = yaml.safe_load((tmp_path / "gpu.lock.yaml").read_text())
    assert lock["installer"]["digest"] == entry["digest"]
    assert {"digest": entry["digest"], "size": entry["size"]} in lock["blobs"]

    # report and runbook list it; the runbook's commands take it out with tar and sha256sum alone
    res = cli("report", str(bundle), "--format", "json")
    assert res.exit_code == 0 and json.loads(res.stdout)["installer"]["digest"] == entry["digest"], res.output
    res = cli("runbook", str(bundle))
    assert res.exit_code == 0, res.output
    book = res.stdout
    assert "Install mirrorkit on the air-gapped host" in book and "sha256sum -c" in book
    start = book.index("tar -xOf")
    steps = book[start:book.index("```", start)].splitlines()[:3]     # take out, check, unpack
    far = tmp_path / "far"
    far.mkdir()
    res = sh("sh", "-c", "set -e\n" + "\n".join(steps), cwd=far)
    assert res.returncode == 0, res.stderr
    assert (far / "mirrorkit-installer" / "install.sh").is_file()

    # install with the network unreachable
    venv = tmp_path / "venv"
    offline = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    res = sh("unshare", "-n", "sh", far / "mirrorkit-installer" / "install.sh", "--prefix", venv, cwd=far, env=offline)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"installed in {venv}" in res.stdout
    res = sh("unshare", "-n", venv / "bin" / "mirrorkit", "--help", cwd=far, env=offline)
    assert res.returncode == 0 and "push-bundle" in res.stdout, res.stderr
    where = sh(venv / "bin" / "python", "-c", "import mirrorkit; print(mirrorkit.__file__)", cwd=far, env=offline)
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout

    # a real push from that install (the registry is on this namespace's loopback)
    res = sh(venv / "bin" / "mirrorkit", "push-bundle", bundle, "--insecure", private.host, "--format", "json",
             cwd=far, env=offline)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["images_pushed"] == 1
    assert "site/nvidia/gpu-operator" in httpx.get(f"{private.url}/v2/_catalog").json()["repositories"]


def test_altered_installer_is_refused(tmp_path: Path, installer: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(installer, copy)
    [wheel] = [p for p in (copy / "wheels").iterdir() if p.name.startswith("mirrorkit-")]
    extra = copy / "wheels" / "zz_evil-1.0-py3-none-any.whl"
    extra.write_bytes(b"PK")
    res = sh("sh", copy / "install.sh", "--prefix", tmp_path / "v1", cwd=tmp_path)
    assert res.returncode == 1 and "zz_evil-1.0-py3-none-any.whl is not listed in SHA256SUMS" in res.stderr
    extra.unlink()
    data = bytearray(wheel.read_bytes())
    data[100] ^= 0xFF
    wheel.write_bytes(bytes(data))
    res = sh("sh", copy / "install.sh", "--prefix", tmp_path / "v2", cwd=tmp_path)
    assert res.returncode == 1 and "SHA256SUMS check failed" in res.stderr, res.stderr
    assert not (tmp_path / "v1").exists() and not (tmp_path / "v2").exists()
    # and pull-bundle will not carry it (bad input: exit 2, before anything is fetched)
    plan = tmp_path / "plan.yaml"
    assert cli("plan", "--image", "nvcr.io/nvidia/gpu-operator:v1", "-o", str(plan)).exit_code == 0
    res = cli("pull-bundle", str(plan), "-o", str(tmp_path / "b.tar"), "--installer", str(copy))
    assert res.exit_code == 2 and f"wheels/{wheel.name}: missing or altered" in res.stderr, res.output


@pytest.mark.parametrize(("os_release", "advice"), [
    ('ID="rhel"\nVERSION_ID="8.9"\n', "sudo dnf install python3.11"),
    ('ID=rocky\nVERSION_ID="9.3"\n', "sudo dnf install python3.11"),
    ('ID=ubuntu\nVERSION_ID="22.04"\n', "sudo apt install python3.11 python3.11-venv"),
])
def test_old_system_python_names_the_package_to_install(tmp_path: Path, installer: Path, os_release: str,
                                                        advice: str) -> None:
    """A machine whose only python3 is 3.9: install.sh stops and names its distribution's package."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sha256sum", "awk", "uname", "dirname", "cat"):
        found = shutil.which(tool)
        assert found is not None
        (bin_dir / tool).symlink_to(Path(found).resolve())
    fake = bin_dir / "python3"
    fake.write_text("#!/bin/sh\necho 3.9\n")
    fake.chmod(0o755)
    osr = tmp_path / "os-release"
    osr.write_text(os_release)
    res = sh("/bin/sh", installer / "install.sh", "--prefix", tmp_path / "v", cwd=tmp_path,
             env={"PATH": str(bin_dir), "HOME": str(tmp_path), "MIRRORKIT_OS_RELEASE": str(osr)})
    assert res.returncode == 1, res.stdout + res.stderr
    assert res.stderr.count("\n") == 1 and "python3 here is 3.9" in res.stderr and advice in res.stderr, res.stderr
    assert not (tmp_path / "v").exists()


def test_lock_without_installer_reads_and_bad_installer_entry_is_refused() -> None:
    digest = "sha256:" + "a" * 64
    old = Lock(id="x", created="", generator="", plan=Plan(images=[]), images=[], blobs=[LockBlob(digest, 10)])
    doc = old.to_dict()
    assert "installer" not in doc and loads_lock(yaml.safe_dump(doc), "old.lock.yaml").installer is None
    entry = {"digest": digest, "size": 10, "version": "0.1.0", "platforms": ["x86_64"], "pythons": ["3.11"],
             "file": "mirrorkit-installer-0.1.0.tar"}
    assert loads_lock(yaml.safe_dump({**doc, "installer": entry}), "new.lock.yaml").installer is not None
    with pytest.raises(InputError, match="invalid platforms"):
        loads_lock(yaml.safe_dump({**doc, "installer": {**entry, "platforms": ["x86_64; rm -rf /"]}}), "bad")
    with pytest.raises(InputError, match="not a blob the bundle carries"):
        loads_lock(yaml.safe_dump({**doc, "installer": {**entry, "digest": "sha256:" + "b" * 64}}), "bad")


def test_the_installer_blob_is_the_same_for_the_same_folder(tmp_path: Path, installer: Path) -> None:
    from mirrorkit.installer.carry import load, pack
    from mirrorkit.oci.layout import BlobStore

    first, second = (pack(load(installer), BlobStore(tmp_path / name)) for name in ("a", "b"))
    assert first == second and first.size == (tmp_path / "a" / "blobs" / "sha256" / first.digest[7:]).stat().st_size
    with tarfile.open(tmp_path / "a" / "blobs" / "sha256" / first.digest[7:]) as tar:
        members = tar.getmembers()
    assert all(m.mtime == 0 and m.uid == 0 and not m.uname for m in members)
    assert [m.name for m in members][:2] == ["mirrorkit-installer", "mirrorkit-installer/SHA256SUMS"]
    assert next(m for m in members if m.name.endswith("/install.sh")).mode == 0o755
