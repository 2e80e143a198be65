"""Large layers cut off mid-download are resumed with Range, in the same run or the next one."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result
from kit.faultproxy import Fault, FaultProxy, Hit
from kit.images import Index, make_image, make_index, make_layer
from kit.push import push_image
from kit.registryd import RegistryServer

from mirrorkit.cli.main import main

BIG = 10 << 20                 # above pull-bundle's 8 MiB threshold for its own, resumable download
CUT = 4 << 20


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def image(registry: RegistryServer) -> Index:
    idx = make_index([make_image("big/amd64", [make_layer("big/amd64", BIG)], ("linux", "amd64")),
                      make_image("big/arm64", [make_layer("big/arm64", 64 << 10)], ("linux", "arm64"))])
    push_image(registry.url, "nvidia/driver", "550", idx)
    return idx


@pytest.fixture
def plan(tmp_path: Path, registry: RegistryServer, image: Index) -> Path:
    out = tmp_path / "plan.yaml"
    res = cli("plan", "--registry", f"{registry.host}/copy", "--image", "nvcr.io/nvidia/driver:550", "--resolve",
              "--source-endpoint", f"nvcr.io=http://{registry.host}", "-o", str(out))
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIRRORKIT_RETRY_ATTEMPTS", "3")
    monkeypatch.setenv("MIRRORKIT_RETRY_BACKOFF", "0.1")
    monkeypatch.setenv("MIRRORKIT_RETRY_MAX_TOTAL", "30")


def big_layer(image: Index) -> tuple[str, int]:
    blob = max((b for i in image.images for b in i.layers), key=lambda b: b.size)
    assert blob.size > 8 << 20
    return blob.digest, blob.size


def pull(plan: Path, out: Path, proxy: FaultProxy) -> Result:
    return cli("pull-bundle", str(plan), "-o", str(out), "--source-endpoint", f"nvcr.io=http://{proxy.host}",
               "--format", "json", "--jobs", "1")


def layer_gets(proxy: FaultProxy, digest: str) -> list[Hit]:
    return proxy.hits("GET", f"/blobs/{digest}$")


def assert_pushes_intact(out: Path, registry: RegistryServer, digest: str, size: int) -> None:
    """The bundle is accepted (every blob hashed against the lock) and the layer arrives whole."""
    res = cli("push-bundle", str(out), "--insecure", registry.host, "--format", "json")
    assert res.exit_code == 0, res.output
    body = httpx.get(f"{registry.url}/v2/copy/nvidia/driver/blobs/{digest}").content
    assert len(body) == size and "sha256:" + hashlib.sha256(body).hexdigest() == digest


def test_a_layer_cut_mid_body_is_resumed_with_range_and_skopeo_does_not_fetch_it_again(
        tmp_path: Path, registry: RegistryServer, image: Index, plan: Path) -> None:
    layer, size = big_layer(image)
    out = tmp_path / "out" / "gpu.tar"
    with FaultProxy(registry.host, [Fault("drop", method="GET", path=f"/blobs/{layer}$", after=CUT)]) as proxy:
        res = pull(plan, out, proxy)
        gets = layer_gets(proxy, layer)
    assert res.exit_code == 0, res.output
    assert [(h.byte_range, h.status) for h in gets] == [("", 200), (f"bytes={CUT}-{size - 1}", 206)]
    assert gets[0].fault == "drop"
    assert json.loads(res.stdout)["images"] == 1
    assert_pushes_intact(out, registry, layer, size)


def test_a_registry_that_ignores_range_gets_the_layer_from_its_first_byte(
        tmp_path: Path, registry: RegistryServer, image: Index, plan: Path) -> None:
    layer, size = big_layer(image)
    out = tmp_path / "out" / "gpu.tar"
    faults = [Fault("drop", method="GET", path=f"/blobs/{layer}$", after=CUT),
              Fault("ignore_range", method="GET", path=f"/blobs/{layer}$", times=5)]
    with FaultProxy(registry.host, faults) as proxy:
        res = pull(plan, out, proxy)
        gets = layer_gets(proxy, layer)
    assert res.exit_code == 0, res.output
    # asked for the rest, was sent the whole object (200), kept that instead of appending it
    assert [(h.byte_range, h.status) for h in gets] == [("", 200), (f"bytes={CUT}-{size - 1}", 200)]
    assert_pushes_intact(out, registry, layer, size)


def test_a_pull_that_gave_up_mid_layer_is_resumed_by_the_next_run(
        tmp_path: Path, registry: RegistryServer, image: Index, plan: Path, fast_retries: None) -> None:
    layer, size = big_layer(image)
    out = tmp_path / "out" / "gpu.tar"
    partial = out.parent / ".gpu.work" / "partial" / f"{layer[7:]}.partial"
    faults = [Fault("drop", method="GET", path=f"/blobs/{layer}$", after=CUT),
              Fault("status", method="GET", path=f"/blobs/{layer}$", status=503, retry_after="0", times=50)]
    with FaultProxy(registry.host, faults) as proxy:
        first = pull(plan, out, proxy)
    assert first.exit_code == 1
    err = first.stderr.strip().splitlines()
    assert len(err) == 1 and "HTTP 503" in err[0] and f"{CUT} of {size} bytes" in err[0] and "resumes" in err[0]
    assert not out.exists() and partial.stat().st_size == CUT
    with FaultProxy(registry.host) as proxy:
        second = pull(plan, out, proxy)
        gets = layer_gets(proxy, layer)
    assert second.exit_code == 0, second.output
    assert [(h.byte_range, h.status) for h in gets] == [(f"bytes={CUT}-{size - 1}", 206)]
    assert not partial.exists()
    assert_pushes_intact(out, registry, layer, size)


def test_a_stale_partial_that_does_not_hash_is_fetched_again_whole(
        tmp_path: Path, registry: RegistryServer, image: Index, plan: Path) -> None:
    layer, size = big_layer(image)
    out = tmp_path / "out" / "gpu.tar"
    partial = out.parent / ".gpu.work" / "partial" / f"{layer[7:]}.partial"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"\0" * CUT)          # not the layer's first bytes
    with FaultProxy(registry.host) as proxy:
        res = pull(plan, out, proxy)
        gets = layer_gets(proxy, layer)
    assert res.exit_code == 0, res.output
    assert [(h.byte_range, h.status) for h in gets] == [(f"bytes={CUT}-{size - 1}", 206), ("", 200)]
    assert_pushes_intact(out, registry, layer, size)
