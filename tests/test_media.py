"""Bundles on real media, end to end on real registries: --split as a hard limit (blobs cut across volumes),
a rerun with another --split, the free-space check and --work-dir, one pull-bundle per output."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from kit.faultproxy import Fault, FaultProxy
from kit.images import Image, make_image, make_layer
from kit.push import push_image
from kit.registryd import RegistryServer
from kit.tmpfs import small_tmpfs

from mirrorkit.bundle.reader import BundleReader
from mirrorkit.cli.main import main

KiB, MiB = 1 << 10, 1 << 20
SPLIT = 128 * KiB


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def one_error_line(res: Result, code: int) -> str:
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == code and len(lines) == 1 and lines[0].startswith("error: "), res.output
    return lines[0]


@pytest.fixture
def driver() -> Image:
    """A driver-like image whose big layer (600 KiB) is several volumes' worth at --split 128KiB."""
    return make_image("media/driver", [make_layer("media/base", 40 * KiB), make_layer("media/big", 600 * KiB)],
                      ("linux", "amd64"))


def make_plan(tmp: Path, upstream: RegistryServer, private: RegistryServer, driver: Image) -> Path:
    push_image(upstream.url, "nvidia/driver", "550", driver)
    plan = tmp / "plan.yaml"
    res = cli("plan", "--registry", f"{private.host}/mirror", "--image", "nvcr.io/nvidia/driver:550", "--resolve",
              "--source-endpoint", f"nvcr.io=http://{upstream.host}", "-o", str(plan))
    assert res.exit_code == 0, res.output
    return plan


def pull(plan: Path, out: Path, upstream: RegistryServer | FaultProxy, *extra: str) -> Result:
    return cli("pull-bundle", str(plan), "-o", str(out), "--source-endpoint", f"nvcr.io=http://{upstream.host}",
               "--format", "json", *extra)


def volumes_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tar"))


@pytest.mark.parametrize("compress", ["none", "zstd"])
def test_split_below_the_largest_blob_pushes_and_reads_back_byte_identical(
        tmp_path: Path, registry_factory, driver: Image, compress: str) -> None:
    upstream, private = registry_factory(), registry_factory()
    plan = make_plan(tmp_path, upstream, private, driver)
    out = tmp_path / "usb"
    out.mkdir()
    res = pull(plan, out / "gpu.tar", upstream, "--split", "128KiB", "--compress", compress)
    assert res.exit_code == 0, res.output
    volumes = [Path(v) for v in json.loads(res.stdout)["volumes"]]     # zstd: read in order, parts streamed on
    assert len(volumes) >= 6
    big = driver.layers[1]
    for volume in volumes:
        assert volume.stat().st_size <= SPLIT, (volume, volume.stat().st_size)
        subprocess.run(["sha256sum", "--quiet", "-c", f"{volume.name}.sha256"], cwd=out, check=True)
    with BundleReader(volumes) as reader:
        assert reader.blobs[big.digest] == big.size
        assert reader.verify().complete

    # a volume with a part in it: push-bundle names it when it is left out, and pushes nothing
    res = cli("push-bundle", *map(str, volumes[:2] + volumes[3:]), "--insecure", private.host)
    assert res.exit_code == 2 and f"volume 3 of {len(volumes)} missing" in res.output, res.output

    res = cli("push-bundle", *map(str, volumes), "--insecure", private.host, "--format", "json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["verified"] == 1

    # skopeo reads the image back from the registry: every blob byte-identical to what upstream served
    copy = tmp_path / "copy"
    subprocess.run(["skopeo", "copy", "--src-tls-verify=false", "--preserve-digests",
                    f"docker://{private.host}/mirror/nvidia/driver:550", f"dir:{copy}"],
                   check=True, capture_output=True)
    assert (copy / big.digest[7:]).read_bytes() == big.data
    assert hashlib.sha256((copy / "manifest.json").read_bytes()).hexdigest() == driver.digest[7:]


def test_a_rerun_with_another_split_rewrites_the_volumes(tmp_path: Path, registry_factory, driver: Image) -> None:
    upstream, private = registry_factory(), registry_factory()
    plan = make_plan(tmp_path, upstream, private, driver)
    out = tmp_path / "usb"
    out.mkdir()
    assert pull(plan, out / "gpu.tar", upstream, "--split", "128KiB").exit_code == 0
    small = volumes_in(out)

    res = pull(plan, out / "gpu.tar", upstream, "--split", "256KiB")
    assert res.exit_code == 0 and json.loads(res.stdout)["up_to_date"] is False, res.output
    larger = volumes_in(out)
    assert 1 < len(larger) < len(small)
    assert all((out / v).stat().st_size <= 256 * KiB for v in larger)

    res = pull(plan, out / "gpu.tar", upstream, "--split", "256KiB")      # the same again: nothing to do
    assert json.loads(res.stdout)["up_to_date"] is True

    res = pull(plan, out / "gpu.tar", upstream)                             # no --split: one file, nothing else
    assert res.exit_code == 0 and json.loads(res.stdout)["up_to_date"] is False, res.output
    assert volumes_in(out) == ["gpu.tar"]
    assert sorted(p.name for p in out.iterdir()) == ["gpu.lock.yaml", "gpu.tar", "gpu.tar.sha256"]
    with BundleReader([out / "gpu.tar"]) as reader:
        assert reader.verify().complete


def test_free_space_is_checked_before_anything_is_written_and_work_dir_moves_the_work_folder(
        tmp_path: Path, registry_factory) -> None:
    upstream, private = registry_factory(), registry_factory()
    image = make_image("media/fat", [make_layer(f"media/fat{i}", MiB) for i in range(4)], ("linux", "amd64"))
    plan = make_plan(tmp_path, upstream, private, image)
    with small_tmpfs(tmp_path / "disk", "2m") as disk:
        res = pull(plan, disk / "gpu.tar", upstream)
        line = one_error_line(res, 2)
        assert line.startswith(f"error: not enough free space for {disk / '.gpu.work'} and {disk}: "), line
        needed, available = _numbers(line)
        assert needed > 4 * MiB > 2 * MiB >= available
        assert list(disk.iterdir()) == []                     # nothing written: no work folder, no lock file

        # the work folder elsewhere: the small disk needs room for the bundle only
        subprocess.run(["mount", "-o", "remount,size=7m", str(disk)], check=True)
        work = tmp_path / "work"
        res = pull(plan, disk / "gpu.tar", upstream, "--work-dir", str(work), "--keep-work")
        assert res.exit_code == 0, res.output
        assert sorted(p.name for p in disk.iterdir()) == ["gpu.lock.yaml", "gpu.tar", "gpu.tar.sha256"]
        assert (work / ".gpu.work" / "blobs" / "sha256" / image.layers[0].digest[7:]).is_file()

        # beside the bundle on a disk with room for about one bundle: the work blobs hand their space over
        for p in disk.iterdir():
            p.unlink()
        needed, available = _numbers(one_error_line(pull(plan, disk / "gpu.tar", upstream, "--keep-work"), 2))
        assert needed > 8 * MiB > 7 * MiB > available   # kept, the work folder would need a second bundle beside it
        res = pull(plan, disk / "gpu.tar", upstream)
        assert res.exit_code == 0, res.output
        with BundleReader([disk / "gpu.tar"]) as reader:
            assert reader.verify().complete


def _numbers(line: str) -> tuple[int, int]:
    """The byte counts of 'N bytes (...) needed, M bytes (...) available'."""
    import re

    match = re.search(r": (\d+) bytes \([^)]*\) needed, (\d+) bytes \([^)]*\) available", line)
    assert match, line
    return int(match.group(1)), int(match.group(2))


def test_a_second_pull_bundle_to_the_same_output_stops_in_one_line_and_spoils_nothing(
        tmp_path: Path, registry_factory, driver: Image) -> None:
    upstream, private = registry_factory(), registry_factory()
    plan = make_plan(tmp_path, upstream, private, driver)
    out = tmp_path / "gpu.tar"
    with FaultProxy(upstream.host) as proxy:
        proxy.add(Fault("stall", path=f"/blobs/{driver.layers[1].digest}", method="GET", seconds=30))
        first = subprocess.Popen(
            [str(Path(sys.executable).with_name("mirrorkit")), "pull-bundle", str(plan), "-o", str(out),
             "--source-endpoint", f"nvcr.io=http://{proxy.host}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 30
            while not proxy.hits("GET", "/blobs/"):          # the first run holds the lock and is fetching
                assert time.monotonic() < deadline and first.poll() is None, first.communicate()
                time.sleep(0.05)
            res = pull(plan, out, proxy)
            line = one_error_line(res, 2)
            assert line == (f"error: {out}: another pull-bundle is writing this bundle (pid {first.pid}); wait "
                            f"for it to finish, or write elsewhere with -o (lock {tmp_path / '.gpu.pull.lock'})")
            proxy.end_stalls()
            _, err = first.communicate(timeout=60)
        finally:
            if first.poll() is None:
                first.kill()
    assert first.returncode == 0, err
    with BundleReader([out]) as reader:
        assert reader.verify().complete
    assert not (tmp_path / ".gpu.pull.lock").exists() and not (tmp_path / ".gpu.work").exists()


def test_two_outputs_sharing_one_work_dir_are_kept_apart(tmp_path: Path) -> None:
    from mirrorkit.bundle.media import holding
    from mirrorkit.errors import InputError

    work = tmp_path / "scratch" / ".gpu.work"
    with holding(tmp_path / "a" / "gpu.tar", work):
        with pytest.raises(InputError, match=rf"^{work}: another pull-bundle is using this work folder \(pid \d+\); "
                                             "wait for it to finish, or give another --work-dir"), \
                holding(tmp_path / "b" / "gpu.tar", work):
            pass
        assert not (tmp_path / "b" / ".gpu.pull.lock").exists()     # the second run let go of its own lock
    assert sorted(p.name for p in (tmp_path / "scratch").iterdir()) == []
