"""Resources stay bounded however many blobs and images there are.

- The bundle writer hashes each volume in a thread of its own, which reads every blob through a
  duplicate of its descriptor; those waited on an unbounded queue (651 open at once for 6,000
  blobs). 6,000 tiny blobs are written here by a child process whose descriptor limit is 256,
  and the parent counts its open descriptors in /proc as it runs.
- The walk fetched each index's children on a pool of its own: 2 x jobs walkers, each with up to
  jobs threads, so the threads grew with the indexes. Now one pool serves every index's children;
  here the threads alive during a walk of many indexes are counted against that bound.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

from kit.images import make_image, make_index, make_layer
from kit.push import push_image
from kit.registryd import RegistryServer

from mirrorkit.lock import Lock, LockBlob, LockImage
from mirrorkit.oci.client import RegistryClient
from mirrorkit.oci.layout import BlobStore
from mirrorkit.oci.transport import Endpoints
from mirrorkit.plan import Plan
from mirrorkit.refs import Ref
from mirrorkit.transfer.engine import Engine, Root, metadata_width
from mirrorkit.transfer.sinks import StoreSink
from mirrorkit.transfer.sources import RegistrySource

BLOBS = 6000
LIMIT = 256
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"

WRITE = """
import sys
from pathlib import Path
from mirrorkit.bundle.writer import write_bundle
from mirrorkit.lock import loads_lock
work, out = Path(sys.argv[1]), Path(sys.argv[2])
write_bundle(work, loads_lock((work / "lock.yaml").read_text(), "lock.yaml"), out)
"""


def work_folder(root: Path) -> Lock:
    """A pull's work folder holding one image of BLOBS tiny layers, and the lock naming them."""
    store = root / "blobs" / "sha256"
    store.mkdir(parents=True)
    layers = []
    for n in range(BLOBS):
        data = hashlib.sha256(f"tiny {n}".encode()).digest()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        (store / digest[7:]).write_bytes(data)
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": len(data)})
    config = b"{}"
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    (store / config_digest[7:]).write_bytes(config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": layers, "config": {
        "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": 2}}).encode()
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    (store / digest[7:]).write_bytes(manifest)
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(manifest)}]}))
    blobs = [LockBlob(d["digest"], d["size"]) for d in layers] + [LockBlob(config_digest, 2),
                                                                  LockBlob(digest, len(manifest))]
    image = LockImage(source="nvcr.io/nvidia/tiny:v1", destination="registry.local/nvidia/tiny:v1", digest=digest,
                      media_type=OCI_MANIFEST, platforms=["linux/amd64"],
                      blobs=[d["digest"] for d in layers] + [config_digest])
    lock = Lock(id="tiny", created="2024-05-01T12:00:00Z", generator="test", plan=Plan(images=[]), images=[image],
                blobs=blobs)
    (root / "lock.yaml").write_text(lock.dumps())
    return lock


def limited() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT))


def test_6000_tiny_blobs_are_written_under_a_256_descriptor_limit(tmp_path: Path) -> None:
    work_folder(tmp_path / "work")
    out = tmp_path / "tiny.tar"
    proc = subprocess.Popen([sys.executable, "-c", WRITE, str(tmp_path / "work"), str(out)], preexec_fn=limited,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        with contextlib.suppress(OSError):          # the child may end between poll and listdir
            peak = max(peak, len(os.listdir(f"/proc/{proc.pid}/fd")))
        time.sleep(0.001)
    _, err = proc.communicate(timeout=120)
    print(f"\n{BLOBS} blobs written; at most {peak} descriptors open at once (limit {LIMIT})")
    assert proc.returncode == 0, err[-2000:]
    assert out.is_file() and out.stat().st_size > BLOBS * 512
    assert peak <= 64 + 20              # the hasher's queue holds 64 blobs; ~20 the interpreter and the volume


def test_the_walk_of_many_indexes_runs_a_bounded_number_of_threads(tmp_path: Path) -> None:
    jobs = 4
    with RegistryServer() as reg:
        base = make_layer("walk/base", 256)
        for n in range(8):
            index = make_index([make_image(f"walk/{n}/{a}", [base], ("linux", a))
                                for a in ("amd64", "arm64", "ppc64le", "s390x")])
            push_image(reg.url, f"walk/app{n}", "v1", index)
        peak = [0]
        done = threading.Event()

        def count() -> None:
            while not done.wait(0.001):
                peak[0] = max(peak[0], threading.active_count())

        sampler = threading.Thread(target=count, daemon=True)
        before = threading.active_count()
        with RegistryClient(Endpoints(insecure={reg.host})) as client:
            sink = StoreSink(BlobStore(tmp_path / "store"))
            roots = [Root(RegistrySource(client, Ref.parse(f"{reg.host}/walk/app{n}:v1")), sink, "v1")
                     for n in range(8)]
            sampler.start()
            graphs = Engine(jobs).walk(roots)
            done.set()
            sampler.join()
    assert all(not g.error and len(g.nodes) == 5 for g in graphs)
    extra = peak[0] - before - 1                        # less the sampler
    print(f"\nwalk of 8 indexes x 4 platforms, --jobs {jobs}: {extra} threads at most")
    assert extra <= 2 * metadata_width(jobs)           # the walkers + one pool for every index's children
