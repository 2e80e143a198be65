"""Registry faults on real registries through a fault-injecting proxy (kit.faultproxy).

Every scenario ends with the destination compared byte for byte with the source
(each manifest and blob fetched straight from the registry, not through the
proxy, and hashed) or with nothing written, and checks in the proxy's log that
the fault really fired.
"""

from __future__ import annotations

import dataclasses
import email.utils
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest
import yaml
from click.testing import CliRunner, Result
from kit.faultproxy import Fault, FaultProxy
from kit.images import Image, Index, make_image, make_index, make_layer, unique_blobs
from kit.push import push_image
from kit.registryd import RegistryServer

from mirrorkit.cli.main import main
from mirrorkit.oci import client as registry_mod

MIRRORKIT = str(Path(sys.executable).parent / "mirrorkit")
ACCEPT = ", ".join(sorted(registry_mod.INDEX_TYPES | registry_mod.MANIFEST_TYPES))
PRIVATE_PREFIX = "kse"
UPLOAD = r"/blobs/uploads/."        # an upload session's URL (PUT / PATCH)
START = r"/blobs/uploads/$"         # starting an upload (POST)
UPLOAD_RE = re.compile(UPLOAD)


def build() -> dict[str, Image | Index]:
    """OCI indexes sharing base layers (so blobs get mounted), a Docker list, a single manifest."""
    arches = ("amd64", "arm64")
    base = {a: make_layer(f"ubi8/{a}", 48 << 10) for a in arches}
    dbase = {a: make_layer(f"ubi8/{a}", 48 << 10, docker=True) for a in arches}

    def oci(name: str) -> Index:
        return make_index([make_image(f"{name}/{a}", [base[a], make_layer(f"{name}/{a}", 16 << 10)], ("linux", a))
                           for a in arches])

    return {
        "nvidia/gpu-operator:v23.9.2": oci("gpu-operator"),
        "nvidia/cloud-native/gpu-operator-validator:v23.9.2": oci("validator"),
        "nvidia/k8s-device-plugin:v0.14.5-ubi8": make_index([
            make_image(f"dp/{a}", [dbase[a], make_layer(f"dp/{a}", 8 << 10, docker=True)], ("linux", a), docker=True)
            for a in arches]),
        "nvidia/cloud-native/k8s-driver-manager:v0.6.5": make_image(
            "driver-manager", [base["amd64"], make_layer("driver-manager", 4 << 10)]),
    }


IMAGES = build()


def seed(reg: RegistryServer) -> None:
    for name, content in IMAGES.items():
        repo, tag = name.split(":")
        push_image(reg.url, repo, tag, content)


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def http_date(delay: float) -> Callable[[], str]:
    return lambda: email.utils.formatdate(time.time() + delay, usegmt=True)


def assert_identical(reg: RegistryServer, prefix: str = PRIVATE_PREFIX) -> None:
    """Every manifest (by tag and by digest) and every blob, fetched from reg itself, hashes as built."""
    with httpx.Client(base_url=reg.url, timeout=10, headers={"Accept": ACCEPT}) as http:
        for name, content in IMAGES.items():
            repo, tag = name.split(":")
            repo = f"{prefix}/{repo}"
            assert sha(http.get(f"/v2/{repo}/manifests/{tag}").content) == content.digest, name
            for image in content.images if isinstance(content, Index) else (content,):
                assert sha(http.get(f"/v2/{repo}/manifests/{image.digest}").content) == image.digest
                for blob in image.blobs():
                    assert sha(http.get(f"/v2/{repo}/blobs/{blob.digest}").content) == blob.digest


def stored(reg: RegistryServer) -> set[str]:
    """Digests of the blobs (and manifests) in the registry's storage, whichever repository links them."""
    root = reg.storage_dir / "docker/registry/v2/blobs/sha256"
    return {f"sha256:{p.parent.name}" for p in root.glob("*/*/data")} if root.is_dir() else set()


def linked(reg: RegistryServer) -> set[tuple[str, str]]:
    """(repository, blob digest) pairs the registry serves: a blob counts only in repositories linking it,
    and only by a whole link (a registry killed while writing one leaves it empty, and then fails on it)."""
    root = reg.storage_dir / "docker/registry/v2/repositories"
    return {(str(p.parents[3].relative_to(root)), f"sha256:{p.parent.name}")
            for p in root.glob("**/_layers/sha256/*/link")
            if p.read_text().strip() == f"sha256:{p.parent.name}"} if root.is_dir() else set()


def killed(proc: subprocess.Popen[str], proxy: FaultProxy) -> int:
    """Kill the client and let what it already sent settle; returns the proxy's arrival mark for what follows.

    The registry finishes requests the dead client left in flight, and the proxy logs a hit only when
    answered, so a snapshot taken before that settles would miss blobs and misattribute the hits.
    """
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=10)
    proxy.end_stalls()
    wait_until(lambda: proxy.forwarding == 0)
    return proxy.arrived


def wait_until(cond: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def upstream() -> Iterator[RegistryServer]:
    with RegistryServer() as reg:
        seed(reg)
        yield reg


@pytest.fixture(scope="module")
def bundles(upstream: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The plan, a plain tar bundle (blobs read in parallel) and a zstd one (read in order)."""
    tmp = tmp_path_factory.mktemp("bundle")
    args = ["plan", "--registry", f"mirror.invalid/{PRIVATE_PREFIX}", "--resolve", "--source-endpoint",
            f"nvcr.io=http://{upstream.host}", "-o", str(tmp / "plan.yaml")]
    for ref in IMAGES:
        args += ["--image", f"nvcr.io/{ref}"]
    assert cli(*args).exit_code == 0
    out = {"plan": tmp / "plan.yaml"}
    for kind, name in (("none", "tar/gpu.tar"), ("zstd", "zstd/gpu.tar.zst")):   # one lock per folder
        res = cli("pull-bundle", str(tmp / "plan.yaml"), "-o", str(tmp / name), "--compress", kind,
                  "--source-endpoint", f"nvcr.io=http://{upstream.host}")
        assert res.exit_code == 0, res.output
        assert (tmp / name).is_file()
        out["tar" if kind == "none" else kind] = tmp / name
    return out


@pytest.fixture
def bundle(bundles: dict[str, Path]) -> Path:
    return bundles["tar"]


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    """Subprocesses a test starts; killed (whole group) if the test leaves one running."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=10)


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """3 attempts, 0.1 s backoff: RegistryClient's own policy, made quick for the test."""
    monkeypatch.setenv("MIRRORKIT_RETRY_ATTEMPTS", "3")
    monkeypatch.setenv("MIRRORKIT_RETRY_BACKOFF", "0.1")
    monkeypatch.setenv("MIRRORKIT_RETRY_MAX_TOTAL", "30")


def resolve(tmp: Path, proxy: FaultProxy, *extra: str, out: str = "plan.yaml") -> Result:
    args = ["plan", "--registry", f"mirror.invalid/{PRIVATE_PREFIX}", "--resolve", "--source-endpoint",
            f"nvcr.io=http://{proxy.host}", "-o", str(tmp / out), *extra]
    for ref in IMAGES:
        args += ["--image", f"nvcr.io/{ref}"]
    return cli(*args)


def planned_digests(path: Path) -> dict[str, str]:
    doc = yaml.safe_load(path.read_text())
    return {i["source"].removeprefix("nvcr.io/"): i["digest"] for i in doc["images"]}


GPU_OP = r"/nvidia/gpu-operator/manifests/v23\.9\.2$"


# -- plan --resolve -----------------------------------------------------------------------

@pytest.mark.parametrize("fault", [
    Fault("status", method="GET", path=GPU_OP, status=503, times=2),
    Fault("status", method="GET", path=GPU_OP, status=429, retry_after="1"),
    Fault("status", method="GET", path=GPU_OP, status=429, retry_after=http_date(1)),
    Fault("status", method="GET", path=GPU_OP, status=429, retry_after="soon, honestly"),
    Fault("status", method="GET", path=GPU_OP, status=429),
    Fault("drop", method="GET", path=r"/manifests/sha256:", after=40, times=2),
    Fault("content_type_params", path="/manifests/", times=100),
], ids=["503x2", "429-seconds", "429-http-date", "429-garbage", "429-missing", "manifest-body-dropped",
        "content-type-params"])
def test_resolve_survives(tmp_path: Path, upstream: RegistryServer, fault: Fault) -> None:
    fault = dataclasses.replace(fault, seen=0, fired=0)
    with FaultProxy(upstream.host, [fault]) as proxy:
        res = resolve(tmp_path, proxy)
    assert res.exit_code == 0, res.output
    assert fault.fired == fault.times or (fault.kind == "content_type_params" and fault.fired >= 4)
    assert planned_digests(tmp_path / "plan.yaml") == {k: v.digest for k, v in IMAGES.items()}


def test_resolve_gives_up_on_a_permanent_503(tmp_path: Path, upstream: RegistryServer) -> None:
    """A registry answering 503 is away: retried for the outage budget (--retry-for), then one line.
    Its "Retry-After: 0" does not make a tight loop of the budget."""
    fault = Fault("status", method="GET", path=GPU_OP, status=503, retry_after="0", times=10_000)
    with FaultProxy(upstream.host, [fault]) as proxy:
        res = resolve(tmp_path, proxy, "--retry-for", "2s")
    assert res.exit_code == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "HTTP 503" in lines[0] and "within the 2 s --retry-for budget" in lines[0], lines
    assert "nvidia/gpu-operator" in lines[0]
    assert 2 <= fault.fired <= 12                 # backoff 0.25 s doubling, within 2 s: no tight loop
    assert not (tmp_path / "plan.yaml").exists()


def test_stall_beyond_the_timeout_is_retried_then_reported(tmp_path: Path, upstream: RegistryServer,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           fast_retries: None) -> None:
    monkeypatch.setenv("MIRRORKIT_HTTP_TIMEOUT", "0.5")
    once = Fault("stall", method="GET", path=GPU_OP, seconds=3)
    with FaultProxy(upstream.host, [once]) as proxy:
        res = resolve(tmp_path, proxy)
        assert res.exit_code == 0, res.output
        # two requests: the held one (still held, so not yet logged) and the retry, answered
        assert once.fired == 1 and [h.status for h in proxy.hits("GET", GPU_OP)] == [200]
    assert planned_digests(tmp_path / "plan.yaml") == {k: v.digest for k, v in IMAGES.items()}

    forever = Fault("stall", method="GET", path=GPU_OP, seconds=30, times=10)
    start = time.monotonic()
    with FaultProxy(upstream.host, [forever]) as proxy:
        res = resolve(tmp_path, proxy, out="never.yaml")
    assert res.exit_code == 1 and time.monotonic() - start < 10
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "timed out" in lines[0].lower() and "gave up after 3 attempts" in lines[0], lines
    assert forever.fired == 3 and not (tmp_path / "never.yaml").exists()


def test_bad_timeout_setting_is_one_line_input_error(tmp_path: Path, upstream: RegistryServer,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIRRORKIT_HTTP_TIMEOUT", "soon")
    with FaultProxy(upstream.host) as proxy:
        res = resolve(tmp_path, proxy)
    assert res.exit_code == 2 and "MIRRORKIT_HTTP_TIMEOUT" in res.stderr


# -- push-bundle ---------------------------------------------------------------------------

def push_through(proxy: FaultProxy, bundle: Path, *extra: str) -> dict:
    res = cli("push-bundle", str(bundle), "--registry", f"{proxy.host}/{PRIVATE_PREFIX}", "--insecure", proxy.host,
              "--format", "json", *extra)
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["problems"] == [] and report["verified"] == len(IMAGES)
    return report


PUSH_FAULTS = {
    "503-on-upload-put": [Fault("status", method="PUT", path=UPLOAD, status=503)],
    "502-on-upload-post": [Fault("status", method="POST", path=START, status=502)],
    "dropped-mid-upload": [Fault("drop", method="PUT", path=UPLOAD, request=True, after=4096, times=2)],
    "503-on-upload-patch": [Fault("status", method="PATCH|PUT", path=UPLOAD, status=503, times=3)],
    "dropped-upload-answer": [Fault("drop", method="PUT", path=UPLOAD, after=0)],
    "dropped-manifest-put-answer": [Fault("drop", method="PUT", path="/manifests/", after=0)],
    "429-http-date-on-head": [Fault("status", method="HEAD", path="/blobs/sha256:", status=429,
                                    retry_after=http_date(1))],
    "429-garbage-on-manifest-put": [Fault("status", method="PUT", path="/manifests/", status=429,
                                          retry_after="Fri, 99 Foo 20x")],
    "relative-location-with-params": [Fault("location", method="POST", path=START, relative=True,
                                            params="proxy=1&trace=a%20b", times=1000)],
    "mount-refused": [Fault("mount_refused", method="POST", path=START, times=1000)],
    "content-type-params": [Fault("content_type_params", path="/manifests/", times=1000)],
    # the 4 skipped GETs are the pre-push check (404s); then the final verification's bodies are cut
    "verify-get-dropped": [Fault("drop", method="GET", path="/manifests/", after=10, skip=4, times=3)],
}


@pytest.mark.parametrize("name", list(PUSH_FAULTS))
def test_push_bundle_survives(name: str, bundle: Path, registry: RegistryServer) -> None:
    faults = [dataclasses.replace(f, seen=0, fired=0) for f in PUSH_FAULTS[name]]
    with FaultProxy(registry.host, faults) as proxy:
        report = push_through(proxy, bundle)
    assert all(f.fired >= 1 for f in faults), faults
    drops = [h.status for h in proxy.log if h.fault == "drop"]
    if name.startswith("dropped-"):
        assert drops and set(drops) == {0}         # the client got no status at all
    if name == "verify-get-dropped":
        assert drops == [200, 200, 200]            # the status went out, the manifest body was cut
    assert report["images_pushed"] == len(IMAGES)
    assert_identical(registry)
    if name == "mount-refused":
        assert report["blobs_mounted"] == 0
        assert proxy.hits("DELETE", UPLOAD), "the declined mount's upload session was not cleaned up"
    if name == "relative-location-with-params":
        assert all("proxy=1" in h.query for h in proxy.hits("PUT", UPLOAD))


# -- the registry restarted mid-way -------------------------------------------------------

def spawn(procs: list[subprocess.Popen[str]], *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([MIRRORKIT, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    procs.append(proc)
    return proc


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return proc.returncode, out, err


def push_args(proxy: FaultProxy | RegistryServer, bundle: Path) -> list[str]:
    return ["push-bundle", str(bundle), "--registry", f"{proxy.host}/{PRIVATE_PREFIX}", "--insecure", proxy.host,
            "--format", "json", "--jobs", "2"]


def test_push_bundle_rides_out_a_registry_restart(bundle: Path, registry: RegistryServer, procs: list) -> None:
    # the third blob upload is held at the proxy while the registry is killed and started again;
    # it then reaches the new process with an upload session the old one began
    held = Fault("stall", method="PUT", path=UPLOAD, skip=2, seconds=3)
    with FaultProxy(registry.host, [held]) as proxy:
        proc = spawn(procs, *push_args(proxy, bundle))
        wait_until(lambda: held.fired == 1 or proc.poll() is not None)
        assert proc.poll() is None and len(stored(registry)) >= 1
        registry.restart()
        code, out, err = finish(proc)
        assert code == 0, err
        assert json.loads(out)["images_pushed"] == len(IMAGES)
        assert [h.status for h in proxy.hits("PUT", UPLOAD) if h.fault == "stall"] == [201]
        assert_identical(registry)
        again = subprocess.run([MIRRORKIT, *push_args(proxy, bundle)], capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    rep = json.loads(again.stdout)
    assert rep["bytes_uploaded"] == 0 and rep["images_skipped"] == len(IMAGES)


def test_ctrl_c_stops_push_bundle_starting_nothing_new_and_a_rerun_completes(
        bundle: Path, registry: RegistryServer, procs: list) -> None:
    held = Fault("stall", method="PUT", path=UPLOAD, skip=1, seconds=2)     # the second blob's upload
    with FaultProxy(registry.host, [held]) as proxy:
        proc = spawn(procs, *push_args(proxy, bundle))
        wait_until(lambda: held.fired == 1 or proc.poll() is not None)
        assert proc.poll() is None
        started = len(proxy.hits("POST", START))
        os.killpg(proc.pid, signal.SIGINT)
        code, out, err = finish(proc)
        assert code == 130 and out == "" and err.strip() == "error: interrupted"
        # the uploads in flight end; none is started after Ctrl-C (two jobs: at most one other was starting)
        assert len(proxy.hits("POST", START)) <= started + 1
        assert proxy.hits("PUT", "/manifests/") == []
        again = subprocess.run([MIRRORKIT, *push_args(proxy, bundle)], capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["images_pushed"] == len(IMAGES)
    assert_identical(registry)


@pytest.mark.parametrize("kind", ["tar", "zstd"])
def test_push_bundle_killed_with_the_registry_then_rerun_uploads_only_the_rest(
        kind: str, bundles: dict[str, Path], registry: RegistryServer, procs: list) -> None:
    blobs = unique_blobs(IMAGES.values())
    # held: the first cross-repository mount, so a shared layer is in one repository and not the others
    held = Fault("stall", method="POST", path=START, query="mount=", seconds=30)
    with FaultProxy(registry.host, [held]) as proxy:
        proc = spawn(procs, *push_args(proxy, bundles[kind])[:-1], "1")
        wait_until(lambda: held.fired == 1 or proc.poll() is not None)
        assert proc.poll() is None
        registry.restart()                      # the registry host and the jump host lose power together
        killed(proc, proxy)
        # what the registry can say it holds: a blob some repository links whole (one whose upload the kill
        # cut between storing its data and linking it is invisible to every client, and is sent again)
        there = {digest for _, digest in linked(registry)} & set(blobs)
        assert 0 < len(there) < len(blobs)
        again = subprocess.run([MIRRORKIT, *push_args(proxy, bundles[kind])], capture_output=True, text=True,
                               timeout=60)
    assert again.returncode == 0, again.stderr
    rep = json.loads(again.stdout)
    assert rep["images_pushed"] == len(IMAGES) and rep["problems"] == []
    # each missing blob uploaded once; what the registry held is mounted or skipped, never sent again
    assert rep["bytes_uploaded"] == sum(b.size for d, b in blobs.items() if d not in there)
    assert rep["blobs_uploaded"] == len(blobs) - len(there)
    assert_identical(registry)


def mirror_args(proxy: FaultProxy | RegistryServer, upstream: RegistryServer, plan: Path) -> list[str]:
    return ["mirror", str(plan), "--source-endpoint", f"nvcr.io=http://{upstream.host}", "--registry",
            f"{proxy.host}/{PRIVATE_PREFIX}", "--insecure", proxy.host, "--format", "json", "--jobs", "2"]


def test_mirror_rides_out_a_registry_restart_and_a_rerun_copies_nothing(
        bundles: dict[str, Path], upstream: RegistryServer, registry: RegistryServer, procs: list) -> None:
    plan = bundles["plan"]
    held = Fault("stall", method="PATCH|PUT", path=UPLOAD, skip=2, seconds=1.5)
    with FaultProxy(registry.host, [held]) as proxy:
        proc = spawn(procs, *mirror_args(proxy, upstream, plan))
        wait_until(lambda: held.fired == 1 or proc.poll() is not None)
        assert proc.poll() is None
        registry.restart()
        code, out, err = finish(proc)
        assert code == 0, err
        assert json.loads(out)["copied"] == len(IMAGES)
        assert_identical(registry)
        before = len(proxy.hits("POST", START))
        again = subprocess.run([MIRRORKIT, *mirror_args(proxy, upstream, plan)], capture_output=True, text=True,
                               timeout=60)
        assert again.returncode == 0, again.stderr
        rep = json.loads(again.stdout)
        assert rep["copied"] == 0 and rep["skipped"] == len(IMAGES)
        assert len(proxy.hits("POST", START)) == before       # not one upload started


def test_mirror_killed_with_the_registry_then_rerun_uploads_only_the_rest(
        bundles: dict[str, Path], upstream: RegistryServer, registry: RegistryServer, procs: list) -> None:
    held = Fault("stall", method="PATCH|PUT", path=UPLOAD, skip=8, seconds=30)   # 4 blobs (PATCH + PUT each)
    with FaultProxy(registry.host, [held]) as proxy:
        proc = spawn(procs, *mirror_args(proxy, upstream, bundles["plan"]))
        wait_until(lambda: held.fired == 1 or proc.poll() is not None)
        assert proc.poll() is None
        registry.restart()
        mark = killed(proc, proxy)
        before = linked(registry)
        again = subprocess.run([MIRRORKIT, *mirror_args(proxy, upstream, bundles["plan"])], capture_output=True,
                               text=True, timeout=60)
        assert again.returncode == 0, again.stderr
        sent = {(h.path.split("/v2/", 1)[1].split("/blobs/", 1)[0], parse_qs(h.query)["digest"][0])
                for h in proxy.since(mark) if h.method == "PUT" and UPLOAD_RE.search(h.path)}
    assert json.loads(again.stdout)["verified"] == len(IMAGES)
    assert len(before) >= 2 and sent and not sent & before     # no blob sent again to a repository holding it
    assert_identical(registry)


# -- tag-list pagination -------------------------------------------------------------------

def broken_links_left_by_a_crash(registry: RegistryServer) -> tuple[str, list[str]]:
    """What distribution leaves when killed while linking blobs: the image's blobs in the
    repository, no manifest yet, and link files empty (it then answers 500 for those blobs)."""
    name = "nvidia/cloud-native/gpu-operator-validator:v23.9.2"
    repo, tag = name.split(":")
    push_image(registry.url, f"{PRIVATE_PREFIX}/{repo}", tag, IMAGES[name])
    root = registry.storage_dir / "docker/registry/v2/repositories" / PRIVATE_PREFIX / repo
    shutil.rmtree(root / "_manifests")
    layers = [image.layers[-1].digest for image in IMAGES[name].images]        # each platform's own layer
    for layer in layers:
        (root / "_layers/sha256" / layer[7:] / "link").write_text("")
        assert httpx.head(f"{registry.url}/v2/{PRIVATE_PREFIX}/{repo}/blobs/{layer}").status_code == 500
    return f"{PRIVATE_PREFIX}/{repo}", layers


@pytest.mark.parametrize("command", ["push-bundle", "mirror"])
def test_blob_links_a_crashed_registry_left_broken_are_repaired(
        command: str, bundles: dict[str, Path], upstream: RegistryServer, registry: RegistryServer,
        fast_retries: None) -> None:
    repo, layers = broken_links_left_by_a_crash(registry)
    args = push_args(registry, bundles["tar"]) if command == "push-bundle" else \
        mirror_args(registry, upstream, bundles["plan"])
    res = cli(*args)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["verified"] == len(IMAGES)
    assert [httpx.head(f"{registry.url}/v2/{repo}/blobs/{layer}").status_code for layer in layers] == [200, 200]
    assert_identical(registry)


def test_verify_finds_a_blob_the_registry_cannot_serve_although_every_manifest_is_there(
        bundle: Path, registry: RegistryServer, fast_retries: None) -> None:
    dest = ("--registry", f"{registry.host}/{PRIVATE_PREFIX}", "--insecure", registry.host)
    assert cli("push-bundle", str(bundle), *dest).exit_code == 0
    name = "nvidia/k8s-device-plugin:v0.14.5-ubi8"
    layer = IMAGES[name].images[1].layers[-1].digest              # arm64's own layer: no node of ours pulls it
    link = (registry.storage_dir / "docker/registry/v2/repositories" / PRIVATE_PREFIX / name.split(":")[0]
            / "_layers/sha256" / layer[7:] / "link")
    link.write_text("")
    assert cli("verify", str(bundle), *dest, "--manifests-only").exit_code == 0
    res = cli("verify", str(bundle), *dest, "--format", "json")
    assert res.exit_code == 1
    doc = json.loads(res.stdout)
    assert not doc["passed"] and len(doc["ok"]) == len(IMAGES) - 1 and doc["different"] == []
    assert len(doc["missing"]) == 1 and layer in doc["missing"][0] and "HTTP 500" in doc["missing"][0]
    link.unlink()                                                  # the registry lost the link entirely
    doc = json.loads(cli("verify", str(bundle), *dest, "--format", "json").stdout)
    assert doc["missing"] == [f"{registry.host}/{PRIVATE_PREFIX}/{name}: blob {layer} is missing"]
    assert "push-bundle --check-blobs" in cli("verify", str(bundle), *dest).stderr
    # a plain rerun trusts the manifests it finds; --check-blobs looks further and puts the blob back
    again = json.loads(cli("push-bundle", str(bundle), *dest, "--check-blobs", "--format", "json").stdout)
    assert again["images_pushed"] == 1 and again["blobs_uploaded"] == 1 and again["problems"] == []
    assert cli("verify", str(bundle), *dest).exit_code == 0
    assert_identical(registry)


def test_inventory_follows_forced_pagination_and_bounds_an_endless_link_loop(tmp_path: Path,
                                                                             registry: RegistryServer) -> None:
    image = make_image("many", [make_layer("many", 4 << 10)])
    tags = [f"v{n}" for n in range(7)]
    for tag in tags:
        push_image(registry.url, f"{PRIVATE_PREFIX}/many", tag, image)
    push_image(registry.url, f"{PRIVATE_PREFIX}/other", "latest", image)
    direct = cli("inventory", "--registry", f"{registry.host}/{PRIVATE_PREFIX}", "--insecure", registry.host,
                 "-o", str(tmp_path / "direct.json"))
    assert direct.exit_code == 0, direct.output

    pages = [Fault("paginate", path=r"/tags/list$", page=2, times=1000),
             Fault("paginate", path=r"/_catalog$", page=1, times=1000)]
    with FaultProxy(registry.host, pages) as proxy:
        res = cli("inventory", "--registry", f"{proxy.host}/{PRIVATE_PREFIX}", "--insecure", proxy.host,
                  "-o", str(tmp_path / "paged.json"))
        assert res.exit_code == 0, res.output
        assert len(proxy.hits("GET", "/many/tags/list$")) == 4 and pages[1].fired >= 2
    paged, want = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("paged", "direct"))
    assert sorted(paged["repositories"][f"{PRIVATE_PREFIX}/many"]["tags"]) == sorted(tags)
    assert {k: paged[k] for k in ("repositories", "manifests", "blobs")} == \
        {k: want[k] for k in ("repositories", "manifests", "blobs")}

    loop = Fault("paginate", path=r"/many/tags/list$", page=2, loop=True, times=5000)
    start = time.monotonic()
    with FaultProxy(registry.host, [loop]) as proxy:
        res = cli("inventory", "--registry", f"{proxy.host}/{PRIVATE_PREFIX}", "--insecure", proxy.host,
                  "--repos", f"{PRIVATE_PREFIX}/many", "-o", str(tmp_path / "loop.json"))
    assert res.exit_code == 1 and time.monotonic() - start < 20
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "loop back" in lines[0] and "giving up" in lines[0], lines
    assert loop.fired <= 3 and not (tmp_path / "loop.json").exists()


def test_proxy_forwards_faithfully_and_never_outlives_its_test(registry: RegistryServer) -> None:
    image = make_image("plain", [make_layer("plain", 300 << 10)])
    with FaultProxy(registry.host) as proxy:
        url = proxy.url
        push_image(proxy.url, "plain", "v1", image)          # streamed bodies, rewritten Location
        got = httpx.get(f"{proxy.url}/v2/plain/blobs/{image.layers[0].digest}")
        assert sha(got.content) == image.layers[0].digest
        assert {h.status for h in proxy.hits("PUT")} == {201}
        data = b"chunked request body " * 5000                  # no Content-Length: sent chunked
        start = httpx.post(f"{url}/v2/plain/blobs/uploads/")
        put = httpx.put(httpx.URL(start.headers["Location"]).copy_merge_params({"digest": sha(data)}),
                        content=iter([data[:40000], data[40000:]]))
        assert put.status_code == 201 and start.headers["Location"].startswith(url)   # Location rewritten
        assert httpx.get(f"{registry.url}/v2/plain/blobs/{sha(data)}").content == data
        proxy.add(Fault("stall", seconds=30))
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(f"{proxy.url}/v2/", timeout=0.3)
        start = time.monotonic()
    assert time.monotonic() - start < 5                         # a held request does not delay stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/v2/", timeout=1)
