#!/usr/bin/env python3
"""``make bench`` (serve part): ``mirrorkit serve`` against its targets, loopback only.

1. throughput: one 1 GiB layer served over loopback (curl as the client) against
   ``cat`` reading the same volume from the same disk; plain HTTP (sendfile) and TLS;
2. 16 concurrent clients, each a ``skopeo copy --all`` of every image of a bundle
   (one image has a 64 MiB layer): all must succeed; the server's peak RSS meanwhile;
3. time to first byte for a 10-volume bundle (10 x 100 MiB layers): from the process
   start (full verification, and ``--trust-checksums``), and per request once serving.

Every bundle is written just before it is served, so its pages are in the page cache
for cat and for the server alike (the machine is shared: caches are not dropped).
Results go to bundles/bench-serve/results.json and standard output.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the test kit lives with the tests

import httpx  # noqa: E402
from kit.bundles import default_images, make_bundle  # noqa: E402
from kit.images import OCI_LAYER, Blob, make_image, make_layer  # noqa: E402
from kit.serveproc import ServeProcess  # noqa: E402
from kit.tls import make_ca  # noqa: E402

WORK = ROOT / "bundles" / "bench-serve"
MiB = 1 << 20


def big_layer(store: Path, seed: str, size: int) -> Blob:
    """An uncompressed layer tar of ``size`` random bytes, streamed into the store (never held in memory)."""
    blobs = store / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    part = blobs.parent / f"{seed}.part"
    hasher = hashlib.sha256()
    info = tarfile.TarInfo(f"data/{seed}.bin")
    info.size, info.mode, info.mtime = size, 0o644, 0
    with open(part, "wb") as f:
        def put(data: bytes) -> None:
            hasher.update(data)
            f.write(data)
        put(info.tobuf(format=tarfile.USTAR_FORMAT))
        left = size
        while left:
            n = min(8 * MiB, left)
            put(os.urandom(n))
            left -= n
        put(b"\0" * ((512 - size % 512) % 512 + 1024))
    digest = "sha256:" + hasher.hexdigest()
    total = part.stat().st_size
    part.replace(blobs / digest.removeprefix("sha256:"))
    return Blob(digest, total, OCI_LAYER, b"", diff_id=digest)


def best(times: list[float]) -> float:
    return min(times)


def cat_seconds(path: Path) -> float:
    start = time.monotonic()
    subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)
    return time.monotonic() - start


def curl(url: str, *extra: str) -> tuple[int, float, float]:
    """(bytes, total seconds, seconds to first byte) of one download to /dev/null."""
    out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{size_download} %{time_total} "
                          "%{time_starttransfer}", *extra, url], capture_output=True, text=True, check=True).stdout
    size, total, first = out.split()
    return int(size), float(total), float(first)


def evict(path: Path) -> None:
    """Drop this one file's pages from the page cache (a cold read) without touching anyone else's."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def bare_sendfile(path: Path, offset: int, size: int, rounds: int) -> float:
    """The loopback ceiling: a blocking ``os.sendfile`` loop (no HTTP server at all), received by curl."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def run() -> None:
        fd = os.open(path, os.O_RDONLY)
        for _ in range(rounds):
            conn, _ = server.accept()
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % size)
            done = 0
            while done < size:
                done += os.sendfile(conn.fileno(), fd, offset + done, size - done)
            conn.close()
        os.close(fd)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    seconds = best([curl(f"http://127.0.0.1:{port}/")[1] for _ in range(rounds)])
    thread.join()
    server.close()
    return size / seconds


def throughput(work: Path, size: int, rounds: int = 3) -> dict:
    layer = big_layer(work / "big-work", "big", size)
    image = make_image("big", [layer])
    built = make_bundle(work / "big-work", work / "big.tar", images={"docker.io/library/big:1": image},
                        extras=False, bundle_id="bench-big")
    shutil.rmtree(work / "big-work", ignore_errors=True)
    volume = built.volumes[0]
    url_path = f"/v2/kse/library/big/blobs/{layer.digest}"
    result: dict = {"layer_bytes": layer.size, "loadavg_before": os.getloadavg()[0]}
    ca = make_ca(work / "pki")
    with ServeProcess([str(volume), "--trust-checksums"], work / "big-http.log") as plain, \
            ServeProcess([str(volume), "--trust-checksums", "--tls-cert", str(ca.cert), "--tls-key", str(ca.key)],
                         work / "big-https.log") as tls:
        # warm: the volume's pages in the page cache for both
        cat_warm = volume.stat().st_size / best([cat_seconds(volume) for _ in range(rounds)])
        runs = [curl(plain.url + url_path) for _ in range(rounds)]
        assert all(r[0] == layer.size for r in runs), runs
        http_warm = layer.size / best([r[1] for r in runs])
        https_warm = layer.size / best([curl(tls.url + url_path, "--cacert", str(ca.ca_cert))[1]
                                        for _ in range(rounds)])
        # cold: this file evicted before each read, cat and the server alternating
        cat_cold, http_cold = [], []
        for _ in range(rounds):
            evict(volume)
            cat_cold.append(cat_seconds(volume))
            evict(volume)
            http_cold.append(curl(plain.url + url_path)[1])
    ceiling = bare_sendfile(volume, 0, layer.size, rounds)   # the volume's first bytes, as many as the layer
    result.update({
        "cat_warm_MBps": round(cat_warm / 1e6), "http_warm_MBps": round(http_warm / 1e6),
        "http_warm_vs_cat": round(http_warm / cat_warm, 2), "https_warm_MBps": round(https_warm / 1e6),
        "https_warm_vs_cat": round(https_warm / cat_warm, 2),
        "cat_cold_MBps": round(volume.stat().st_size / best(cat_cold) / 1e6),
        "http_cold_MBps": round(layer.size / best(http_cold) / 1e6),
        "http_cold_vs_cat": round((layer.size / best(http_cold)) / (volume.stat().st_size / best(cat_cold)), 2),
        "bare_sendfile_loopback_MBps": round(ceiling / 1e6),
        "http_warm_vs_bare_sendfile": round(http_warm / ceiling, 2),
        "loadavg_after": os.getloadavg()[0],
    })
    volume.unlink()
    return result


def rss_of(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def concurrent_skopeo(work: Path, clients: int) -> dict:
    images = default_images(big=64 * MiB)
    built = make_bundle(work / "load-work", work / "load.tar", images=images, bundle_id="bench-load")
    refs = [f"kse/{s.split('/', 1)[1]}" for s in images]
    results: list[bool] = [False] * clients
    peak = [0]
    with ServeProcess([str(built.volumes[0])], work / "load.log") as server:
        assert server.proc is not None
        pid = server.proc.pid
        before = rss_of(pid, "VmRSS")
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], rss_of(pid, "VmRSS"))
                time.sleep(0.02)

        def client(n: int) -> None:
            ok = True
            for ref in refs:
                out = work / f"client{n}-{ref.replace('/', '_')}"
                res = subprocess.run(["skopeo", "copy", "--all", "--src-tls-verify=false", f"docker://{server.host}/{ref}",
                                      f"dir:{out}"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
                ok = ok and res.returncode == 0
                shutil.rmtree(out, ignore_errors=True)
            results[n] = ok

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        start = time.monotonic()
        threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - start
        stop.set()
        sampler.join()
        hwm = rss_of(pid, "VmHWM")
    total = sum(b.size for c in images.values() for b in c.blobs()) * clients
    shutil.rmtree(work / "load-work", ignore_errors=True)
    return {"clients": clients, "succeeded": sum(results), "seconds": round(elapsed, 2),
            "bytes_served": total, "rss_idle_MB": round(before / 1e6, 1),
            "rss_peak_during_load_MB": round(peak[0] / 1e6, 1), "vmhwm_MB": round(hwm / 1e6, 1)}


def first_byte(work: Path, volumes: int, layer: int) -> dict:
    store = work / "split-work"
    layers = [big_layer(store, f"vol{n}", layer) for n in range(volumes)]
    images = {f"docker.io/library/split{n}:1": make_image(f"split{n}", [make_layer(f"s{n}", 4096), layers[n]])
              for n in range(volumes)}
    built = make_bundle(store, work / "split.tar", images=images, split=layer * 3 // 2, extras=False,
                        bundle_id="bench-split")
    out: dict = {"volumes": len(built.volumes), "bundle_bytes": sum(v.stat().st_size for v in built.volumes)}
    last = layers[-1].digest
    for label, extra in (("full_verify", []), ("trust_checksums", ["--trust-checksums"])):
        start = time.monotonic()
        with ServeProcess([str(built.volumes[0]), *extra], work / f"split-{label}.log") as server:
            with httpx.Client(base_url=server.url, timeout=60) as http, \
                    http.stream("GET", f"/v2/kse/library/split{volumes - 1}/blobs/{last}") as response:
                next(response.iter_raw(1024))
                out[f"{label}_start_to_first_byte_s"] = round(time.monotonic() - start, 3)
            checked = re.search(r"verified bundle \S+: .*\((\d+\.\d+) s\)", server.output())
            out[f"{label}_verify_s"] = float(checked.group(1)) if checked else None
            requests = [curl(f"{server.url}/v2/kse/library/split{n}/blobs/{layers[n].digest}", "-r", "0-1023")[2]
                        for n in range(volumes)]
            out[f"{label}_request_ttfb_ms_max"] = round(max(requests) * 1000, 2)
    shutil.rmtree(store, ignore_errors=True)
    for v in built.volumes:
        v.unlink()
        Path(str(v) + ".sha256").unlink(missing_ok=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layer-mib", type=int, default=1024, help="size of the throughput layer")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--split-layer-mib", type=int, default=100)
    parser.add_argument("--only", choices=("throughput", "concurrent", "first_byte"), action="append")
    args = parser.parse_args()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    runs = {"throughput": lambda: throughput(WORK, args.layer_mib * MiB),
            "concurrent": lambda: concurrent_skopeo(WORK, args.clients),
            "first_byte": lambda: first_byte(WORK, 10, args.split_layer_mib * MiB)}
    results = {}
    for name, run in runs.items():
        if not args.only or name in args.only:
            results[name] = run()
            print(json.dumps({name: results[name]}), flush=True)
    (WORK / "results.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
