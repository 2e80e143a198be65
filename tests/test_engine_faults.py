"""The one copy engine under faults, for pull-bundle, mirror and push-bundle, on real registries.

A fault proxy (kit.faultproxy) stands in front of a real docker-registry: the
upstream for pull-bundle and mirror, the private registry for push-bundle. Each
run must end byte-identical to the upstream, and that is checked independently
of mirrorkit: skopeo reads the manifests of both sides raw, and ``skopeo copy``
pulls every image back (checking every blob's digest as it does).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from kit.faultproxy import Fault, FaultProxy
from kit.images import Image, Index, make_image, make_index, make_layer, unique_blobs
from kit.push import push_image
from kit.registryd import RegistryServer

from mirrorkit.cli.main import main

MIRRORKIT = str(Path(sys.executable).parent / "mirrorkit")
PREFIX = "kse"
BLOB = r"/blobs/sha256:"
UPLOAD = r"/blobs/uploads/."


def build() -> dict[str, Image | Index]:
    arches = ("amd64", "arm64")
    base = {a: make_layer(f"eng-base/{a}", 40 << 10) for a in arches}
    return {
        "nvidia/gpu-operator:v1": make_index([
            make_image(f"eng-op/{a}", [base[a], make_layer(f"eng-op/{a}", 24 << 10)], ("linux", a)) for a in arches]),
        "nvidia/k8s-device-plugin:v1": make_index([
            make_image(f"eng-dp/{a}", [make_layer(f"eng-dp/{a}", 20 << 10, docker=True)], ("linux", a), docker=True)
            for a in arches]),
        "nvidia/driver-manager:v1": make_image("eng-dm", [base["amd64"], make_layer("eng-dm", 8 << 10)]),
    }


IMAGES = build()
BLOBS = unique_blobs(IMAGES.values())


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(autouse=True)
def quick_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The retry policy, injected through its settings: quick backoff, a 1 s no-progress limit."""
    monkeypatch.setenv("MIRRORKIT_RETRY_ATTEMPTS", "8")
    monkeypatch.setenv("MIRRORKIT_RETRY_BACKOFF", "0.05")
    monkeypatch.setenv("MIRRORKIT_STALL_TIMEOUT", "1")


@pytest.fixture(scope="module")
def upstream() -> Iterator[RegistryServer]:
    with RegistryServer() as reg:
        for name, content in IMAGES.items():
            repo, tag = name.split(":")
            push_image(reg.url, repo, tag, content)
        yield reg


@pytest.fixture(scope="module")
def plan(upstream: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("plan") / "plan.yaml"
    args = ["plan", "--registry", f"mirror.invalid/{PREFIX}", "--resolve", "--source-endpoint",
            f"nvcr.io=http://{upstream.host}", "-o", str(out)]
    for ref in IMAGES:
        args += ["--image", f"nvcr.io/{ref}"]
    res = cli(*args)
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="module")
def bundle(upstream: RegistryServer, plan: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "gpu.tar"
    res = cli("pull-bundle", str(plan), "-o", str(out), "--source-endpoint", f"nvcr.io=http://{upstream.host}")
    assert res.exit_code == 0, res.output
    return out


def skopeo(*args: str) -> bytes:
    res = subprocess.run(["skopeo", "--insecure-policy", *args], capture_output=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr.decode()
    return res.stdout


def assert_identical(upstream: RegistryServer, dest: RegistryServer, tmp: Path, prefix: str = PREFIX) -> None:
    """skopeo reads both sides: every manifest byte for byte, and pulls every image (blob digests checked)."""
    for name, content in IMAGES.items():
        up = f"docker://{upstream.host}/{name}"
        down = f"docker://{dest.host}/{prefix}/{name}"
        raw = skopeo("inspect", "--raw", "--tls-verify=false", down)
        assert raw == skopeo("inspect", "--raw", "--tls-verify=false", up), name
        # the index bytes are the upstream's, so pulling it whole by digest checks every child and blob
        target = tmp / "readback" / dest.host.replace(":", "_") / name.replace("/", "_").replace(":", "_")
        target.parent.mkdir(parents=True, exist_ok=True)
        skopeo("copy", "--all", "--preserve-digests", "--src-tls-verify=false",
               f"{down.rsplit(':', 1)[0]}@{content.digest}", f"dir:{target}")


def assert_bundle_identical(upstream: RegistryServer, out: Path, tmp: Path) -> None:
    """A pulled bundle, pushed to a fresh registry without faults, reads back as the upstream."""
    with RegistryServer() as fresh:
        res = cli("push-bundle", str(out), "--registry", f"{fresh.host}/{PREFIX}", "--insecure", fresh.host,
                  "--format", "json")
        assert res.exit_code == 0, res.output
        assert_identical(upstream, fresh, tmp)


FAULTS = {
    "503-random": [Fault("status", status=503, rate=0.2, seed=8, times=1000)],
    "503-every-4th": [Fault("status", status=503, every=4, times=1000)],
    "429-retry-after": [Fault("status", status=429, retry_after="1", path=BLOB, times=2)],
    "cut-bodies-and-resets": [Fault("drop", method="GET", path=BLOB, after=5000, times=3),
                              Fault("drop", method="GET", path="/manifests/", after=0, times=3)],
    # a 3 s stall on a blob (past the 1 s no-progress limit) and one on a manifest that never ends
    "stalls": [Fault("stall", method="GET", path=BLOB, seconds=3, times=1),
               Fault("stall", method="GET", path="/manifests/sha256:", seconds=3600, times=1)],
}


def fresh(faults: list[Fault]) -> list[Fault]:
    return [dataclasses.replace(f, seen=0, fired=0) for f in faults]


@pytest.mark.parametrize("name", list(FAULTS))
def test_pull_bundle_through_faults_is_byte_identical(name: str, upstream: RegistryServer, plan: Path,
                                                      tmp_path: Path) -> None:
    faults = fresh(FAULTS[name])
    out = tmp_path / "gpu.tar"
    with FaultProxy(upstream.host, faults) as proxy:
        res = cli("pull-bundle", str(plan), "-o", str(out), "--source-endpoint", f"nvcr.io=http://{proxy.host}",
                  "--format", "json", "--jobs", "3")
        proxy.end_stalls()
    assert res.exit_code == 0, res.output
    assert all(f.fired >= 1 for f in faults), faults
    lock = (tmp_path / "gpu.lock.yaml").read_text()
    assert all(d in lock for d in BLOBS)
    assert_bundle_identical(upstream, out, tmp_path)


@pytest.mark.parametrize("name", list(FAULTS))
def test_mirror_through_faults_is_byte_identical(name: str, upstream: RegistryServer, plan: Path,
                                                 registry: RegistryServer, tmp_path: Path) -> None:
    faults = fresh(FAULTS[name])
    with FaultProxy(upstream.host, faults) as proxy:
        res = cli("mirror", str(plan), "--source-endpoint", f"nvcr.io=http://{proxy.host}", "--registry",
                  f"{registry.host}/{PREFIX}", "--insecure", registry.host, "--format", "json", "--jobs", "3")
        proxy.end_stalls()
    assert res.exit_code == 0, res.output
    assert all(f.fired >= 1 for f in faults), faults
    assert json.loads(res.stdout)["verified"] == len(IMAGES)
    assert_identical(upstream, registry, tmp_path)


PUSH_FAULTS = {
    "503-random-and-429": [Fault("status", status=503, rate=0.2, seed=4, times=1000),
                           Fault("status", status=429, retry_after="1", method="PATCH|PUT", path=UPLOAD, times=1)],
    "503-every-4th": [Fault("status", status=503, every=4, times=1000)],
    "cut-upload-bodies": [Fault("drop", method="PUT", path=UPLOAD, request=True, after=3000, times=3)],
    "stall-forever": [Fault("stall", method="PUT", path=UPLOAD, seconds=3600, times=1)],
}


@pytest.mark.parametrize("name", list(PUSH_FAULTS))
def test_push_bundle_through_faults_is_byte_identical(name: str, upstream: RegistryServer, bundle: Path,
                                                      registry: RegistryServer, tmp_path: Path) -> None:
    faults = fresh(PUSH_FAULTS[name])
    with FaultProxy(registry.host, faults) as proxy:
        res = cli("push-bundle", str(bundle), "--registry", f"{proxy.host}/{PREFIX}", "--insecure", proxy.host,
                  "--format", "json", "--jobs", "3")
        proxy.end_stalls()
    assert res.exit_code == 0, res.output
    assert all(f.fired >= 1 for f in faults), faults
    assert_identical(upstream, registry, tmp_path)


def test_one_blob_upload_refused_for_good_sends_a_bounded_number_of_posts(bundle: Path,
                                                                         registry: RegistryServer) -> None:
    """No retry loop inside another: a POST that always fails is sent once per attempt, not attempts²."""
    always = Fault("status", method="POST", path=r"/blobs/uploads/$", status=503, times=1000)
    with FaultProxy(registry.host, [always]) as proxy:
        res = CliRunner().invoke(main, ["push-bundle", str(bundle), "--registry", f"{proxy.host}/{PREFIX}",
                                        "--insecure", proxy.host, "--jobs", "1"], catch_exceptions=False,
                                 env={"MIRRORKIT_RETRY_ATTEMPTS": "4"})
        posts = len(proxy.hits("POST", r"/blobs/uploads/$"))
    assert res.exit_code == 1
    assert "HTTP 503" in res.stderr and "gave up after 4 attempts" in res.stderr
    assert posts == 4                            # one blob, 4 attempts, then the run stops


def test_a_registry_gone_for_good_is_one_line_soon(plan: Path, tmp_path: Path) -> None:
    with RegistryServer() as gone:
        host = gone.host
    started = time.monotonic()
    res = subprocess.run([MIRRORKIT, "pull-bundle", str(plan), "-o", str(tmp_path / "gpu.tar"),
                          "--source-endpoint", f"nvcr.io=http://{host}"], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "MIRRORKIT_RETRY_ATTEMPTS": "4"})
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "ConnectError" in lines[0] and "nvcr.io" in lines[0] and "gave up" in lines[0]
    assert time.monotonic() - started < 60


def test_pull_rides_out_the_upstream_killed_and_back_5_s_later(registry_factory, plan: Path,
                                                                tmp_path: Path) -> None:
    """The upstream registry process is killed mid-run and started again 5 s later: the same run completes."""
    upstream = registry_factory()
    for name, content in IMAGES.items():
        repo, tag = name.split(":")
        push_image(upstream.url, repo, tag, content)
    held = Fault("stall", method="GET", path=BLOB, skip=2, seconds=0.5)
    out = tmp_path / "gpu.tar"
    with FaultProxy(upstream.host, [held]) as proxy:
        proc = subprocess.Popen([MIRRORKIT, "pull-bundle", str(plan), "-o", str(out), "--source-endpoint",
                                 f"nvcr.io=http://{proxy.host}", "--format", "json", "--jobs", "1"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                                env={**os.environ, "MIRRORKIT_RETRY_ATTEMPTS": "30",
                                     "MIRRORKIT_RETRY_BACKOFF": "0.2"})
        try:
            deadline = time.monotonic() + 30
            while held.fired == 0 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert proc.poll() is None
            upstream.restart(after=5)                # killed; back on the same port 5 s later
            out_text, err = proc.communicate(timeout=90)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
        gone = [h for h in proxy.log if h.status == 502]
    assert proc.returncode == 0, err
    assert gone, "the run never saw the registry gone"
    assert json.loads(out_text)["images"] == len(IMAGES)
    assert_bundle_identical(upstream, out, tmp_path)


def test_kill_9_of_pull_then_rerun_fetches_no_completed_blob_again(upstream: RegistryServer, plan: Path,
                                                                    tmp_path: Path) -> None:
    out = tmp_path / "gpu.tar"
    held = Fault("stall", method="GET", path=BLOB, skip=3, seconds=3600)   # the 4th blob hangs
    argv = [MIRRORKIT, "pull-bundle", str(plan), "-o", str(out), "--format", "json", "--jobs", "1"]
    with FaultProxy(upstream.host, [held]) as proxy:
        proc = subprocess.Popen([*argv, "--source-endpoint", f"nvcr.io=http://{proxy.host}"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                                env={**os.environ, "MIRRORKIT_STALL_TIMEOUT": "60"})
        deadline = time.monotonic() + 30
        while held.fired == 0 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=10)
        proxy.end_stalls()
        children = subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True, text=True, check=False)
        assert children.stdout.strip() == "", "a child of the killed pull is still running"
        done = {h.path.rsplit("/", 1)[1] for h in proxy.log if h.method == "GET" and BLOB in h.path
                and h.status == 200 and h.fault != "stall"}
        assert len(done) >= 3
        mark = proxy.arrived
        res = subprocess.run([*argv, "--source-endpoint", f"nvcr.io=http://{proxy.host}"], capture_output=True,
                             text=True, timeout=60)
        again = {h.path.rsplit("/", 1)[1] for h in proxy.since(mark) if h.method == "GET" and BLOB in h.path}
    assert res.returncode == 0, res.stderr
    assert not done & again, "a blob fetched whole before the kill was fetched again"
    assert_bundle_identical(upstream, out, tmp_path)


def test_two_concurrent_pushes_of_one_bundle_both_succeed(upstream: RegistryServer, bundle: Path,
                                                          registry_factory, tmp_path: Path) -> None:
    """Each run may find a child manifest the other is still writing: it re-pushes and retries."""
    for _ in range(2):
        registry = registry_factory()
        argv = [MIRRORKIT, "push-bundle", str(bundle), "--registry", f"{registry.host}/{PREFIX}", "--insecure",
                registry.host, "--format", "json"]
        procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
    assert_identical(upstream, registry, tmp_path)


def test_keep_going_copies_what_it_can_and_lists_every_failure(upstream: RegistryServer, plan: Path,
                                                               tmp_path: Path) -> None:
    import yaml

    doc = yaml.safe_load(plan.read_text())
    gone = [{**doc["images"][0], "source": f"nvcr.io/nvidia/gone{n}:v1",
             "destination": f"mirror.invalid/kse/gone{n}:v1", "digest": "sha256:" + f"{n}" * 64} for n in (1, 2)]
    doc["images"] += gone
    broken = tmp_path / "plan.yaml"
    broken.write_text(yaml.safe_dump(doc, sort_keys=False))
    out = tmp_path / "gpu.tar"
    res = cli("pull-bundle", str(broken), "-o", str(out), "--source-endpoint", f"nvcr.io=http://{upstream.host}",
              "--keep-going")
    assert res.exit_code == 1
    assert "2 image(s) could not be copied" in res.stderr
    assert "nvcr.io/nvidia/gone1:v1" in res.stderr and "nvcr.io/nvidia/gone2:v1" in res.stderr
    assert not out.exists()
    work = tmp_path / ".gpu.work" / "blobs" / "sha256"
    assert {f"sha256:{p.name}" for p in work.iterdir()} >= set(BLOBS)   # everything else was fetched
    # without --keep-going the first failure stops the run
    res = cli("pull-bundle", str(broken), "-o", str(out), "--source-endpoint", f"nvcr.io=http://{upstream.host}")
    assert res.exit_code == 1 and "could not be copied" not in res.stderr
