"""pull-bundle under hostile conditions on the connected side: Ctrl-C, a full disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kit.images import make_image, make_index, make_layer
from kit.push import push_image

MIRRORKIT = str(Path(sys.executable).parent / "mirrorkit")


def seed_big(reg, count: int = 6, layer: int = 2 << 20) -> list[str]:
    refs = []
    for n in range(count):
        idx = make_index([make_image(f"big{n}/{a}", [make_layer(f"big{n}/{a}", layer)], ("linux", a))
                          for a in ("amd64", "arm64")])
        push_image(reg.url, f"nvidia/big{n}", "v1", idx)
        refs.append(f"nvcr.io/nvidia/big{n}:v1")
    return refs


def make_plan(tmp: Path, upstream, refs: list[str]) -> Path:
    plan = tmp / "plan.yaml"
    args = [MIRRORKIT, "plan", "--registry", "mirror.local/kse", "--resolve", "--source-endpoint",
            f"nvcr.io=http://{upstream.host}", "-o", str(plan)]
    for r in refs:
        args += ["--image", r]
    subprocess.run(args, check=True, capture_output=True)
    return plan


def test_ctrl_c_leaves_no_bundle_and_a_rerun_completes(tmp_path: Path, registry) -> None:
    plan = make_plan(tmp_path, registry, seed_big(registry, count=8, layer=4 << 20))
    out = tmp_path / "out" / "gpu.tar"
    argv = [MIRRORKIT, "pull-bundle", str(plan), "-o", str(out), "--jobs", "1", "--source-endpoint",
            f"nvcr.io=http://{registry.host}", "--format", "json"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    work = out.parent / ".gpu.work" / "blobs" / "sha256"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (work.is_dir() and len(list(work.iterdir())) >= 4):
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode != 0, f"the pull should have been interrupted: {err.decode()[-2000:]}"
    assert not out.exists() and not list(out.parent.glob("*.partial")) and not list(out.parent.glob(".*.partial"))
    assert not (out.parent / "gpu.lock.yaml").exists()
    fetched_before = len(list(work.iterdir()))
    assert fetched_before >= 4
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["images"] == 8 and out.is_file()
    verify = subprocess.run([MIRRORKIT, "push-bundle", str(out), "--registry", f"{registry.host}/copy",
                             "--insecure", registry.host], capture_output=True, text=True, check=False)
    assert verify.returncode == 0, verify.stderr


@pytest.fixture
def small_disk(tmp_path: Path):
    mount = tmp_path / "usb"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_is_a_clear_error_and_leaves_nothing_misleading(tmp_path: Path, registry, small_disk: Path) -> None:
    plan = make_plan(tmp_path, registry, seed_big(registry, count=4, layer=1 << 20))
    out = small_disk / "gpu.tar"
    argv = [MIRRORKIT, "pull-bundle", str(plan), "-o", str(out), "--source-endpoint",
            f"nvcr.io=http://{registry.host}"]
    res = subprocess.run(argv, capture_output=True, text=True, check=False)
    # found before the download, not after it: one line, exit 2, nothing written
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "not enough free space for" in lines[0] and str(small_disk) in lines[0]
    assert list(small_disk.iterdir()) == []
    assert not [p for p in small_disk.iterdir() if p.name.endswith(".partial")]
