"""A full disk during pull-bundle (a real 8 MiB tmpfs, a real registry): one line naming the work folder,
its size and that a rerun resumes; the partial goes, completed blobs stay and are not fetched again."""

from __future__ import annotations

import subprocess
from pathlib import Path

from click.testing import CliRunner, Result
from kit.faultproxy import FaultProxy
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

            def pull() -> Result:
                return cli("pull-bundle", str(plan), "-o", str(out), "--source-endpoint", endpoint, "--jobs", "1")

            # 1. the 10 MiB layer cannot fit: its partial download is removed, the disk is not left full
            line = one_error_line(pull())
            assert line.startswith("error: no space left on device while downloading nvcr.io/nvidia/driver@"
                                   f"{big.digest} ({big.size} bytes); removed the partial {work}/partial/"), line
            assert f"the work folder {work} (" in line and "run the same command again, it resumes" in line
            assert not (work / "partial").exists() or not any((work / "partial").iterdir())
            assert free_bytes(disk) > 6 * MiB
            assert not out.exists()

            # 2. room for the blobs but not for the bundle beside them: the partial bundle goes, blobs stay
            subprocess.run(["mount", "-o", "remount,size=20m", str(disk)], check=True)
            line = one_error_line(pull())
            assert line.startswith(f"error: no space left on device while writing the bundle {out} (about "), line
            assert f"the work folder {work} (13." in line and "it resumes from there" in line
            assert sorted(p.name for p in disk.iterdir()) == [".gpu.work"]
            assert (work / "blobs" / "sha256" / big.digest[7:]).is_file()
            assert free_bytes(disk) > 6 * MiB

            # 3. with room, the rerun reuses every blob of the work folder: no layer is fetched again
            subprocess.run(["mount", "-o", "remount,size=40m", str(disk)], check=True)
            mark = len(proxy.log)
            res = pull()
            assert res.exit_code == 0, res.output
            fetched = [h.path for h in proxy.since(mark) if "/blobs/" in h.path and h.method == "GET"]
            assert fetched == [], fetched
            with BundleReader([out]) as reader:
                report = reader.verify()
                assert report.complete and reader.blobs[big.digest] == big.size
