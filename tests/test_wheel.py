"""The wheel carries the image lists: built, installed in a fresh venv elsewhere, it plans a release."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*argv: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"{argv}: {res.stdout}\n{res.stderr}"
    return res


def test_the_wheel_installed_in_a_fresh_venv_plans_a_shipped_release(tmp_path: Path) -> None:
    # build from a copy of the sources, so the work tree gets no build/ or egg-info folders
    src = tmp_path / "src"
    for folder in ("mirrorkit", "image-lists"):
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, src / name)
    wheels = tmp_path / "wheels"
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
        "-w", wheels, src, cwd=tmp_path)
    [wheel] = wheels.glob("mirrorkit-*.whl")
    lists = [n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("mirrorkit/image_lists/")]
    assert {f"mirrorkit/image_lists/{flavor}/v23.9.2.yaml" for flavor in ("helm", "kubesphere")} <= set(lists)

    # a fresh venv; the dependencies come from this test's own environment through a path file (no network),
    # and only the wheel provides mirrorkit
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel,
        cwd=tmp_path)
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path)
                .stdout.strip())
    (site / "zz_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    home = tmp_path / "elsewhere"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIRRORKIT_", "PYTHON", "VIRTUAL_ENV"))}
    where = run(python, "-c", "import mirrorkit; print(mirrorkit.__file__)", cwd=home, env=env).stdout.strip()
    assert Path(where).is_relative_to(venv), where
    res = run(venv / "bin" / "mirrorkit", "plan", "--version", "v23.9.2", "--node", "ubuntu22.04/5.15.0-131-generic",
              "--driver-branch", "550", "--precompiled", "--format", "json", cwd=home, env=env)
    images = [i["source"] for i in json.loads(res.stdout)["images"]]
    assert "nvcr.io/nvidia/driver:550-5.15.0-131-generic-ubuntu22.04" in images
    assert "nvcr.io/nvidia/gpu-operator:v23.9.2" in images and len(images) == 12
