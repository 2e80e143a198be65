"""Real outages and Ctrl-C during push-bundle: a registry restarted mid-push, one gone for good, SIGINT
through a slow link.

A real ``docker-registry`` behind the kit's fault proxy, whose ``upload_rate`` makes every
upload body a slow link; the registry process is killed and started again on the same
port and storage (``RegistryServer.restart``), so the proxy answers 502 meanwhile, as a
gateway does. mirrorkit runs as a subprocess, as a user runs it. The seconds printed
are the figures BENCHMARKS.md reports; the asserts hold far from any timing edge.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from kit.faultproxy import FaultProxy
from kit.images import Image, make_image, make_layer, unique_blobs
from kit.push import push_image
from kit.registryd import RegistryServer

from mirrorkit.cli.main import main

MIRRORKIT = str(Path(sys.executable).parent / "mirrorkit")
PREFIX = "kse"
BASE = make_layer("outage/base", 2 << 20)
IMAGES: dict[str, Image] = {
    "nvidia/a:v1": make_image("outage/a", [BASE, make_layer("outage/a", 1 << 20)]),
    "nvidia/b:v1": make_image("outage/b", [BASE, make_layer("outage/b", 1 << 20)]),
    "nvidia/big:v1": make_image("outage/big", [make_layer("outage/big", 12 << 20)]),
}
BIG = IMAGES["nvidia/big:v1"].layers[0]
ACCEPT = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tmp = tmp_path_factory.mktemp("outage")
    with RegistryServer() as upstream:
        for name, image in IMAGES.items():
            repo, tag = name.split(":")
            push_image(upstream.url, repo, tag, image)
        src = ["--source-endpoint", f"nvcr.io=http://{upstream.host}"]
        args = ["plan", "--registry", f"mirror.invalid/{PREFIX}", "--resolve", *src, "-o", str(tmp / "plan.yaml")]
        for name in IMAGES:
            args += ["--image", f"nvcr.io/{name}"]
        runner = CliRunner()
        assert runner.invoke(main, args).exit_code == 0
        res = runner.invoke(main, ["pull-bundle", str(tmp / "plan.yaml"), "-o", str(tmp / "b.tar"), *src])
        assert res.exit_code == 0, res.output
    yield tmp / "b.tar"


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=10)


def push(procs: list[subprocess.Popen[str]], bundle: Path, host: str, *extra: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([MIRRORKIT, "push-bundle", str(bundle), "--registry", f"{host}/{PREFIX}", "--insecure",
                             host, "--format", "json", "--jobs", "2", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    procs.append(proc)
    return proc


def wait_until(cond: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def assert_identical(reg: RegistryServer) -> None:
    """Every manifest and blob, fetched from the registry itself (not through the proxy), hashes as built."""
    with httpx.Client(base_url=reg.url, timeout=10, headers={"Accept": ACCEPT}) as http:
        for name, image in IMAGES.items():
            repo, tag = name.split(":")
            data = http.get(f"/v2/{PREFIX}/{repo}/manifests/{tag}").content
            assert "sha256:" + hashlib.sha256(data).hexdigest() == image.digest, name
            for blob in unique_blobs([image]).values():
                got = http.get(f"/v2/{PREFIX}/{repo}/blobs/{blob.digest}").content
                assert "sha256:" + hashlib.sha256(got).hexdigest() == blob.digest


def test_push_bundle_rides_out_a_registry_killed_and_back_5_s_later(bundle: Path, registry: RegistryServer,
                                                                    procs: list) -> None:
    """Killed 0.6 s into the uploads, started again 5 s later on the same port and storage: the same run
    completes (an upload session the restart forgot starts again, and is no failure)."""
    with FaultProxy(registry.host) as proxy:
        proxy.upload_rate = 8 << 20                  # 8 MB/s per upload: the uploads take about 2 s
        proc = push(procs, bundle, proxy.host)
        wait_until(lambda: proxy.uploads or proc.poll() is not None)
        time.sleep(0.6)
        assert proc.poll() is None
        registry.restart(after=5)                    # killed; back 5 s later, same port, same storage
        back = time.monotonic()
        out, err = proc.communicate(timeout=120)
        recovered = time.monotonic() - back
        gone = [h for h in proxy.log if h.status == 502]
    print(f"\nregistry back -> push-bundle done: {recovered:.2f} s")
    assert proc.returncode == 0, err
    assert gone, "the run never met the registry gone"
    rep = json.loads(out)
    assert rep["images_pushed"] == len(IMAGES) and rep["problems"] == []
    assert_identical(registry)


def test_a_registry_gone_for_good_is_one_line_once_the_budget_is_spent(bundle: Path, registry: RegistryServer,
                                                                        procs: list) -> None:
    with FaultProxy(registry.host) as proxy:
        proxy.upload_rate = 8 << 20
        proc = push(procs, bundle, proxy.host, "--retry-for", "5s")
        wait_until(lambda: proxy.uploads or proc.poll() is not None)
        registry.stop()                               # for good
        gone = time.monotonic()
        out, err = proc.communicate(timeout=90)
        took = time.monotonic() - gone
    print(f"\nregistry gone for good -> one-line error after {took:.2f} s (--retry-for 5s)")
    assert proc.returncode == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "gave up" in lines[0], err
    assert "5 s --retry-for budget" in lines[0] and "502" in lines[0]
    assert took < 45                                  # the budget, not the old attempts count or a hang


def test_ctrl_c_stops_an_upload_through_a_slow_link_within_a_chunk_and_a_rerun_completes(
        bundle: Path, registry: RegistryServer, procs: list) -> None:
    with FaultProxy(registry.host) as proxy:
        proxy.upload_rate = 2 << 20                  # 2 MB/s: the 12 MB layer would take 6 s
        proc = push(procs, bundle, proxy.host)

        def big_upload_started() -> bool:
            return any(u.received > (2 << 20) and u.end == 0 for u in proxy.uploads) or proc.poll() is not None

        wait_until(big_upload_started)
        os.killpg(proc.pid, signal.SIGINT)
        pressed = time.monotonic()
        out, err = proc.communicate(timeout=60)
        stopped = time.monotonic() - pressed
        cut = [u for u in proxy.uploads if u.received >= (2 << 20)]
        print(f"\nSIGINT -> push-bundle exited after {stopped:.2f} s (link 2 MB/s per upload)")
        assert proc.returncode == 130 and err.strip() == "error: interrupted", err
        assert cut and all(u.received < BIG.size for u in cut), "the big upload ran to its end after Ctrl-C"
        assert stopped < 4                             # the upload left would take over 4 s more
        proxy.upload_rate = None
        again = subprocess.run([MIRRORKIT, "push-bundle", str(bundle), "--registry", f"{proxy.host}/{PREFIX}",
                                "--insecure", proxy.host, "--format", "json"], capture_output=True, text=True,
                               timeout=60)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["images_pushed"] == len(IMAGES)
    assert_identical(registry)
