"""A layer shared by several repositories is uploaded once, then mounted, while the other workers keep moving.

Four images in four repositories share one layer that takes 1 s to upload through the proxy's
slow link, and each has two layers of its own that take 0.5 s. With ``--jobs 4`` every worker
is uploading while the shared layer goes up (the proxy measures how many upload bodies it reads
at once); a lock per digest used to park the three other workers on the shared layer for its whole
second. The figures printed are the ones BENCHMARKS.md reports.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest
from click.testing import CliRunner
from kit.faultproxy import FaultProxy, peak_overlap
from kit.images import Image, make_image, make_layer
from kit.push import push_image
from kit.registryd import RegistryServer

from mirrorkit.cli.main import main

MIRRORKIT = str(Path(sys.executable).parent / "mirrorkit")
PREFIX = "kse"
RATE = 2 << 20                                   # bytes per second per upload body
SHARED = make_layer("shared/cuda-base", RATE)   # 1 s through the link
IMAGES: dict[str, Image] = {
    f"nvidia/app{n}:v1": make_image(f"shared/app{n}", [SHARED, make_layer(f"shared/app{n}/a", RATE // 2),
                                                       make_layer(f"shared/app{n}/b", RATE // 2)])
    for n in range(4)
}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tmp = tmp_path_factory.mktemp("shared")
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


def test_a_shared_layer_is_uploaded_once_while_every_worker_keeps_uploading(bundle: Path,
                                                                            registry: RegistryServer) -> None:
    with FaultProxy(registry.host) as proxy:
        proxy.upload_rate = RATE
        res = subprocess.run([MIRRORKIT, "push-bundle", str(bundle), "--registry", f"{proxy.host}/{PREFIX}",
                              "--insecure", proxy.host, "--format", "json", "--jobs", "4"],
                             capture_output=True, text=True, timeout=120)
        mounts = proxy.hits("POST", r"/blobs/uploads/$")
    assert res.returncode == 0, res.stderr
    rep = json.loads(res.stdout)
    assert rep["images_pushed"] == 4 and rep["problems"] == []
    bodies = [u for u in proxy.uploads if u.received > 4096]       # layers (configs are a few hundred bytes)
    shared = [u for u in bodies if SHARED.digest in unquote(u.query)]
    assert len(shared) == 1, "the shared layer was uploaded more than once"
    assert rep["blobs_mounted"] == 3 and sum("mount=" in h.query for h in mounts) == 3
    during = [(max(u.start, shared[0].start), min(u.end, shared[0].end)) for u in bodies
              if u.start < shared[0].end and u.end > shared[0].start]
    span = max(u.end for u in bodies) - min(u.start for u in bodies)
    print(f"\nuploads: {span:.2f} s for 1 shared 1 s layer + 8 own 0.5 s layers, --jobs 4; "
          f"{peak_overlap(during)} uploads at once while the shared layer went up")
    assert peak_overlap(during) == 4                               # no worker parked on the shared layer
