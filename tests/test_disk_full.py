"""A full disk during pull-bundle (a real 8 MiB tmpfs, a real registry): one line naming the work folder,
its size and that a rerun resumes; the partial goes, completed blobs stay and are not fetched again."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner, Result
from kit.faultproxy import Fault, FaultProxy
from kit.images import Index, make_image, make_index, make_layer
from kit.push import push_image
from kit.registryd import RegistryServer
from kit.tmpfs import free_bytes, small_tmpfs

from mirrorkit.bundle.reader import BundleReader
from mirrorkit.cli.main import main

MiB = 1 << 20


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def one_error_line(res: Result) -> str:
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:") or "Traceback" in ln]
    assert len(lines) == 1 and res.exit_code == 1, res.output
    return lines[0]


def fill_while_stalled(registry: RegistryServer, digest: str, disk: Path, leave: int,
                       run: Callable[[str], Result]) -> Result:
    """Run a pull whose download of ``digest`` is held at a proxy until a filler file leaves only ``leave``
    bytes free on ``disk``: the disk fills after the free-space check, as when another program writes."""
    with FaultProxy(registry.host, [Fault("stall", path=f"/blobs/{digest}", method="GET", seconds=60)]) as proxy:
        result: list[Result] = []
        worker = threading.Thread(target=lambda: result.append(run(f"nvcr.io=http://{proxy.host}")))
        worker.start()
        deadline = time.monotonic() + 30
        while not proxy.faults[0].fired:
            assert time.monotonic() < deadline and worker.is_alive()
            time.sleep(0.05)
        with open(disk / "filler", "wb") as f:
            f.truncate(0)
            f.write(bytes(max(free_bytes(disk) - leave, 0)))
        proxy.end_stalls()                       # the held download is cut; its retry meets the full disk
        worker.join(60)
    return result[0]


def test_pull_bundle_on_a_full_disk_says_one_line_and_a_rerun_resumes(tmp_path: Path,
                                                                     registry: RegistryServer) -> None:
    small = make_layer("disk/small", 3 * MiB)          # fetched by skopeo into the shared store
    big = make_layer("disk/big", 10 * MiB)             # fetched by mirrorkit's resumable download (>= 8 MiB)
    index: Index = make_index([make_image("disk/amd64", [small, big], ("linux", "amd64"))])
    push_image(registry.url, "nvidia/driver", "550", index)
    plan = tmp_path / "plan.yaml"
    with FaultProxy(registry.host) as proxy:
        endpoint = f"nvcr.io=http://{proxy.host}"
        res = cli("plan", "--registry", "127.0.0.1:5000/copy", "--image", "nvcr.io/nvidia/driver:550", "--resolve",
                  "--source-endpoint", endpoint, "-o", str(plan))
        assert res.exit_code == 0, res.output
        with small_tmpfs(tmp_path / "disk", "8m") as disk:
            out, work = disk / "gpu.tar", disk / ".gpu.work"

            def pull(endpoint: str = endpoint) -> Result:
                return cli("pull-bundle", str(plan), "-o", str(out), "--source-endpoint", endpoint, "--jobs", "1")

            # 0. too small from the start: refused before a byte is written
            res = pull()
            assert res.exit_code == 2 and "not enough free space for" in res.output, res.output
            assert list(disk.iterdir()) == []

            # 1. the disk fills up during the 10 MiB layer: its partial download is removed, the disk not left full
            subprocess.run(["mount", "-o", "remount,size=40m", str(disk)], check=True)
            line = one_error_line(fill_while_stalled(registry, big.digest, disk, 5 * MiB, pull))
            assert line.startswith("error: no space left on device while downloading nvcr.io/nvidia/driver@"
                                   f"{big.digest} ({big.size} bytes); removed the partial {work}/partial/"), line
            assert f"the work folder {work} (" in line and "run the same command again, it resumes" in line
            assert not (work / "partial").exists() or not any((work / "partial").iterdir())
            assert not out.exists()
            (disk / "filler").unlink()

            # 2. room for the blobs but not for the bundle beside them: the partial bundle goes, the work folder stays
            line = one_error_line(fill_while_stalled(registry, big.digest, disk, 15 * MiB, pull))
            assert line.startswith(f"error: no space left on device while writing the bundle {out} (about "), line
            assert "it resumes from there" in line
            assert sorted(p.name for p in disk.iterdir()) == [".gpu.work", "filler"]
            assert free_bytes(disk) > MiB             # the partial volume is gone: the disk is not left full
            (disk / "filler").unlink()

            # 3. with room, the rerun reuses every blob still in the work folder
            mark = len(proxy.log)
            res = pull()
            assert res.exit_code == 0, res.output
            fetched = [h.path for h in proxy.since(mark) if "/blobs/" in h.path and h.method == "GET"]
            assert len(fetched) <= 1, fetched        # the blob the failed write had handed over, at most
            with BundleReader([out]) as reader:
                report = reader.verify()
                assert report.complete and reader.blobs[big.digest] == big.size
