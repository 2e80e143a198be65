#!/usr/bin/env python3
"""``make bench``: mirrorkit's copier measured against skopeo on the same data, loopback only.

Builds a synthetic GPU-Operator-shaped set (multi-arch images whose platform
manifests share one base layer per architecture, as UBI-based images do),
serves it from a real docker-registry on 127.0.0.1, and prints each figure as a
ratio measured in the same run. Results are also written as JSON
(bundles/bench/results.json) for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the test kit (images, registries) lives with the tests

from kit.distance import DistanceProxy  # noqa: E402
from kit.images import (  # noqa: E402
    GPU_OPERATOR_REFS,
    OCI_LAYER,
    Blob,
    gpu_operator_like_set,
    make_image,
    make_layer,
    unique_blobs,
)
from kit.push import push_image  # noqa: E402
from kit.registryd import RegistryServer  # noqa: E402

MIRRORKIT = str(Path(sys.executable).parent / "mirrorkit")
WORK = ROOT / "bundles" / "bench"


def du(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


class Sampler:
    """Samples a folder's size while a command runs, to find its peak scratch use."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.peak, self._stop = folder, 0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, du(self.folder))
            time.sleep(0.05)

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.thread.join()
        self.peak = max(self.peak, du(self.folder))


# A small, freshly started parent forks and execs the measured command: the bench process
# itself holds the synthetic data set, and a child forked from it would report that memory too.
_WRAPPER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
sys.stderr.write(f"\\nMAXRSS {usage.ru_maxrss * 1024}\\n")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of a command and the children it waited for."""
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", _WRAPPER, *argv], capture_output=True, env=env, check=False)
    elapsed = time.monotonic() - start
    err = proc.stderr.decode()
    if proc.returncode != 0:
        sys.stderr.write(err[-2000:])
        raise SystemExit(f"bench: {' '.join(argv[:3])} ... exited {proc.returncode}")
    rss = int(err.rsplit("MAXRSS ", 1)[1].split()[0])
    return elapsed, rss


def rerun(argv: list[str], times: int = 3) -> float:
    """Median wall seconds of a no-change rerun, run directly: the RSS wrapper's own Python
    start-up (~25 ms) is a measuring device, and for a sub-second run it would be a tenth of it."""
    runs = []
    for _ in range(times):
        start = time.monotonic()
        subprocess.run(argv, capture_output=True, check=True)
        runs.append(time.monotonic() - start)
    return sorted(runs)[len(runs) // 2]


def seed(upstream: RegistryServer, layer_size: int, count: int) -> tuple[list[str], int]:
    refs = list(GPU_OPERATOR_REFS)[:count]
    content = gpu_operator_like_set(refs, layer_size=layer_size)
    for (repo, tag) in refs:
        push_image(upstream.url, repo, tag, content[f"{repo}:{tag}"])
    unique = sum(b.size for b in unique_blobs(content.values()).values())
    manifests = sum(len(i.data) + sum(len(c.manifest) for c in i.images) for i in content.values())
    return [f"nvcr.io/{r}:{t}" for r, t in refs], unique + manifests


def run_set(label: str, layer_size: int, count: int, compare: bool) -> dict:
    work = WORK / label
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    res: dict = {"layer_size": layer_size, "images": count}
    with RegistryServer() as upstream, RegistryServer() as reg_skopeo, RegistryServer() as reg_mk:
        t0 = time.monotonic()
        sources, unique = seed(upstream, layer_size, count)
        res["seed_seconds"] = round(time.monotonic() - t0, 1)
        res["unique_blob_bytes"] = unique
        ep = ["--source-endpoint", f"nvcr.io=http://{upstream.host}"]
        plan = work / "plan.yaml"
        args = [MIRRORKIT, "plan", "--registry", f"{reg_mk.host}/bench", "--resolve", *ep, "-o", str(plan)]
        for s in sources:
            args += ["--image", s]
        subprocess.run(args, check=True, capture_output=True)

        if compare:
            spec = work / "sync.yaml"
            spec.write_text(json.dumps({upstream.host: {
                "tls-verify": False,
                "images": {s.split("/", 1)[1].rsplit(":", 1)[0]: [s.rsplit(":", 1)[1]] for s in sources}}}))
            sync_dir = work / "skopeo-sync"
            res["skopeo_sync_seconds"], _ = timed(["skopeo", "--insecure-policy", "sync", "--all", "--src", "yaml",
                                                   "--dest", "dir", str(spec), str(sync_dir)])
            res["skopeo_sync_bytes"] = du(sync_dir)
            shutil.rmtree(sync_dir)

        bundle = work / "bench.tar"
        res["pull_seconds"], res["pull_peak_rss"] = timed([MIRRORKIT, "pull-bundle", str(plan), "-o", str(bundle),
                                                           *ep, "--format", "json"])
        res["bundle_bytes"] = du(bundle)
        res["pull_rerun_seconds"] = rerun([MIRRORKIT, "pull-bundle", str(plan), "-o", str(bundle), *ep])

        if compare:
            layout = work / "oci-layout"
            shared = work / "oci-blobs"
            for n, s in enumerate(sources):
                subprocess.run(["skopeo", "--insecure-policy", "copy", "--all", "--preserve-digests",
                                "--src-tls-verify=false", "--dest-shared-blob-dir", str(shared),
                                f"docker://{upstream.host}/{s.split('/', 1)[1]}", f"oci:{layout}:img{n}"],
                               check=True, capture_output=True)
            start = time.monotonic()
            for n, s in enumerate(sources):
                subprocess.run(["skopeo", "--insecure-policy", "copy", "--all", "--preserve-digests",
                                "--src-shared-blob-dir", str(shared), "--dest-tls-verify=false",
                                f"oci:{layout}:img{n}", f"docker://{reg_skopeo.host}/{s.split('/', 1)[1]}"],
                               check=True, capture_output=True)
            res["skopeo_copy_push_seconds"] = time.monotonic() - start
            shutil.rmtree(layout)
            shutil.rmtree(shared)

        scratch = work / "tmp"
        scratch.mkdir()
        env = dict(os.environ, TMPDIR=str(scratch))
        with Sampler(scratch) as sampler:
            res["push_seconds"], res["push_peak_rss"] = timed(
                [MIRRORKIT, "push-bundle", str(bundle), "--insecure", reg_mk.host, "--format", "json"], env)
        res["push_peak_scratch"] = sampler.peak
        res["push_rerun_seconds"] = rerun([MIRRORKIT, "push-bundle", str(bundle), "--insecure", reg_mk.host])

        if compare:
            mirror_rows(res, upstream, plan, sources, ep)
            faulty_rows(res, upstream, plan, work)
    shutil.rmtree(work, ignore_errors=True)
    return res


def mirror_rows(res: dict, upstream: RegistryServer, plan: Path, sources: list[str], ep: list[str]) -> None:
    """mirror registry -> registry against sequential ``skopeo copy docker:// docker://`` of the same images."""
    with RegistryServer() as reg_sk, RegistryServer() as reg_mk:
        start = time.monotonic()
        for s in sources:
            path = s.split("/", 1)[1]
            subprocess.run(["skopeo", "--insecure-policy", "copy", "--all", "--preserve-digests",
                            "--src-tls-verify=false", "--dest-tls-verify=false",
                            f"docker://{upstream.host}/{path}", f"docker://{reg_sk.host}/bench/{path}"],
                           check=True, capture_output=True)
        res["skopeo_copy_mirror_seconds"] = time.monotonic() - start
        argv = [MIRRORKIT, "mirror", str(plan), *ep, "--registry", f"{reg_mk.host}/bench", "--insecure", reg_mk.host,
                "--format", "json"]
        res["mirror_seconds"], res["mirror_peak_rss"] = timed(argv)
        res["mirror_rerun_seconds"] = rerun(argv)


def faulty_rows(res: dict, upstream: RegistryServer, plan: Path, work: Path) -> None:
    """pull-bundle through a proxy failing 25 % of requests (503, seeded), against the same proxy without faults."""
    from kit.faultproxy import Fault, FaultProxy

    for label, faults in (("clean", []), ("faulty", [Fault("status", status=503, rate=0.25, seed=1, times=10**9)])):
        with FaultProxy(upstream.host, faults) as proxy:
            out = work / f"proxy-{label}.tar"
            res[f"pull_proxy_{label}_seconds"], _ = timed(
                [MIRRORKIT, "pull-bundle", str(plan), "-o", str(out), "--source-endpoint",
                 f"nvcr.io=http://{proxy.host}", "--format", "json"])
            res[f"pull_proxy_{label}_requests"] = len(proxy.log)
            res[f"pull_proxy_{label}_503s"] = sum(1 for h in proxy.log if h.fault == "status")
            for p in work.glob(f"proxy-{label}*"):
                p.unlink()


def scale_rows(label: str, images: dict[str, object]) -> dict:
    """Peak RSS (and wall time) of pull-bundle, push-bundle and mirror on an odd-shaped set: memory
    must stay flat whatever the layer size or the number of images. Each command runs once."""
    work = WORK / label
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    res: dict = {"images": len(images)}
    with RegistryServer() as upstream, RegistryServer() as private:
        t0 = time.monotonic()
        for name, content in images.items():
            repo, tag = name.split(":")
            for layer in getattr(content, "layers", ()):
                if layer.size > 64 << 20:
                    push_big_blob(upstream.url, repo, layer)
            push_image(upstream.url, repo, tag, content)
        res["seed_seconds"] = round(time.monotonic() - t0, 1)
        ep = ["--source-endpoint", f"nvcr.io=http://{upstream.host}"]
        plan = work / "plan.yaml"
        args = [MIRRORKIT, "plan", "--registry", f"{private.host}/bench", "--resolve", *ep, "-o", str(plan)]
        for name in images:
            args += ["--image", f"nvcr.io/{name}"]
        subprocess.run(args, check=True, capture_output=True)
        bundle = work / "bench.tar"
        res["pull_seconds"], res["pull_peak_rss"] = timed([MIRRORKIT, "pull-bundle", str(plan), "-o", str(bundle),
                                                           *ep, "--format", "json"])
        res["bundle_bytes"] = du(bundle)
        res["push_seconds"], res["push_peak_rss"] = timed(
            [MIRRORKIT, "push-bundle", str(bundle), "--insecure", private.host, "--format", "json"])
        for p in work.glob("bench*"):
            p.unlink()
        res["mirror_seconds"], res["mirror_peak_rss"] = timed(
            [MIRRORKIT, "mirror", str(plan), *ep, "--registry", f"{private.host}/mirrored", "--insecure",
             private.host, "--format", "json"])
    shutil.rmtree(work, ignore_errors=True)
    return res


def push_big_blob(url: str, repo: str, blob: Blob) -> None:
    """Upload a large blob as a stream of 4 MiB pieces (the kit's one-``bytes`` PUT is quadratic in
    httpcore's send loop for a 1 GiB body); the kit then finds it there and sends only the rest."""
    import httpx

    def pieces() -> Iterator[bytes]:
        for start in range(0, blob.size, 4 << 20):
            yield blob.data[start:start + (4 << 20)]

    with httpx.Client(timeout=60) as http:
        started = http.post(f"{url}/v2/{repo}/blobs/uploads/")
        started.raise_for_status()
        target = started.url.join(started.headers["Location"]).copy_merge_params({"digest": blob.digest})
        http.put(target, content=pieces(), headers={"Content-Type": "application/octet-stream",
                                                    "Content-Length": str(blob.size)}).raise_for_status()


def one_big_layer(size: int) -> dict[str, object]:
    """One image whose only layer is ``size`` generated bytes (a 1 MiB random block repeated: quick to make,
    and the registry and mirrorkit treat it as any layer)."""
    block = os.urandom(1 << 20)
    data = block * (size >> 20)
    layer = Blob.of(data, OCI_LAYER)
    layer = Blob(layer.digest, layer.size, OCI_LAYER, data, layer.digest)   # uncompressed: diff_id == digest
    return {"nvidia/driver:big": make_image("big", [layer])}


def many_tiny_images(count: int) -> dict[str, object]:
    return {f"nvidia/tiny/app{n:03d}:v1": make_image(f"tiny{n}", [make_layer(f"tiny{n}", 4 << 10)])
            for n in range(count)}


DELAY = 0.025           # one way: 50 ms per round trip
RATE = 50e6             # bytes per second, each direction


def distance_set(label: str, content: dict[str, object], runs: int) -> dict:
    """pull-bundle and skopeo sync of one set through a 50 ms, 50 MB/s link, and pull-bundle's no-change rerun.

    The plan is resolved on loopback (it pins every digest, as a real plan does); only the
    measured commands cross the distance."""
    work = WORK / f"distance-{label}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    res: dict = {"images": len(content)}
    with RegistryServer() as upstream:
        for ref, image in content.items():
            repo, tag = ref.split(":")
            push_image(upstream.url, repo, tag, image)  # type: ignore[arg-type]
        res["unique_blob_bytes"] = sum(b.size for b in unique_blobs(content.values()).values())  # type: ignore[arg-type]
        sources = [f"nvcr.io/{ref}" for ref in content]
        plan = work / "plan.yaml"
        args = [MIRRORKIT, "plan", "--registry", "mirror.invalid/bench", "--resolve", "--source-endpoint",
                f"nvcr.io=http://{upstream.host}", "-o", str(plan)]
        for src in sources:
            args += ["--image", src]
        subprocess.run(args, check=True, capture_output=True)
        with DistanceProxy(upstream.host, DELAY, RATE) as far:
            spec = work / "sync.yaml"
            spec.write_text(json.dumps({far.host: {
                "tls-verify": False,
                "images": {s.split("/", 1)[1].rsplit(":", 1)[0]: [s.rsplit(":", 1)[1]] for s in sources}}}))
            sync_dir = work / "skopeo-sync"
            res["skopeo_sync_seconds"], _ = timed(["skopeo", "--insecure-policy", "sync", "--all", "--src", "yaml",
                                                   "--dest", "dir", str(spec), str(sync_dir)])
            shutil.rmtree(sync_dir)
            ep = ["--source-endpoint", f"nvcr.io=http://{far.host}"]
            pulls = []
            for n in range(runs):
                bundle = work / f"b{n}.tar"
                seconds, rss = timed([MIRRORKIT, "pull-bundle", str(plan), "-o", str(bundle), *ep, "--format", "json"])
                pulls.append(seconds)
                res["pull_peak_rss"] = rss
            res["pull_seconds_runs"] = [round(x, 2) for x in pulls]
            res["pull_seconds"] = sorted(pulls)[len(pulls) // 2]
            res["pull_rerun_seconds"] = rerun([MIRRORKIT, "pull-bundle", str(plan), "-o", str(bundle), *ep])
    res["link_floor_seconds"] = res["unique_blob_bytes"] / RATE
    shutil.rmtree(work, ignore_errors=True)
    return res


def distance_rows(runs: int = 1) -> dict:
    """The issue's real-distance rows: 17 GPU-Operator-shaped images (~110 MB unique) and 60 tiny images."""
    refs = [*GPU_OPERATOR_REFS, ("nvidia/cloud-native/k8s-kata-manager", "v0.1.2")][:17]
    shaped = {k: v for k, v in gpu_operator_like_set(refs, layer_size=2 << 20).items()}
    out = {"gpu_operator_17": distance_set("gpu", shaped, runs), "tiny_60": distance_set("tiny", many_tiny_images(60),
                                                                                          runs)}
    gpu, tiny = out["gpu_operator_17"], out["tiny_60"]
    rows = [
        ("17 images: pull-bundle / link floor", gpu["pull_seconds"] / gpu["link_floor_seconds"], 1.5),
        ("17 images: pull-bundle / skopeo sync", gpu["pull_seconds"] / gpu["skopeo_sync_seconds"], None),
        ("17 images: no-change rerun / skopeo sync", gpu["pull_rerun_seconds"] / gpu["skopeo_sync_seconds"], None),
        ("60 tiny: pull-bundle / skopeo sync", tiny["pull_seconds"] / tiny["skopeo_sync_seconds"], 0.15),
        ("60 tiny: no-change rerun / skopeo sync", tiny["pull_rerun_seconds"] / tiny["skopeo_sync_seconds"], 0.05),
    ]
    print(f"\nreal distance ({DELAY * 2000:.0f} ms round trips, {RATE / 1e6:.0f} MB/s)   measured   target   verdict")
    for name, value, target in rows:
        verdict = "" if target is None else ("met" if value <= target else "MISSED")
        print(f"{name:<45} {value:>8.3f}   {'' if target is None else f'<= {target}':<8} {verdict}")
    print(json.dumps(out, indent=2))
    return out


def report(main: dict, small: dict, scale: dict[str, dict] | None = None) -> dict:
    def ratio(a: float, b: float) -> float:
        return round(a / b, 3) if b else float("inf")

    r = {
        "pull_vs_skopeo_sync": ratio(main["pull_seconds"], main["skopeo_sync_seconds"]),
        "bundle_vs_unique": ratio(main["bundle_bytes"], main["unique_blob_bytes"]),
        "skopeo_sync_vs_unique": ratio(main["skopeo_sync_bytes"], main["unique_blob_bytes"]),
        "push_vs_skopeo_copy": ratio(main["push_seconds"], main["skopeo_copy_push_seconds"]),
        "pull_rerun_vs_first": ratio(main["pull_rerun_seconds"], main["pull_seconds"]),
        "push_rerun_vs_first": ratio(main["push_seconds"] and main["push_rerun_seconds"], main["push_seconds"]),
        "push_peak_rss_mb": round(main["push_peak_rss"] / 1e6, 1),
        "push_peak_rss_mb_small_layers": round(small["push_peak_rss"] / 1e6, 1),
        "pull_peak_rss_mb": round(main["pull_peak_rss"] / 1e6, 1),
        "push_scratch_vs_bundle": ratio(main["push_peak_scratch"], main["bundle_bytes"]),
        "mirror_vs_skopeo_copy": ratio(main["mirror_seconds"], main["skopeo_copy_mirror_seconds"]),
        "mirror_rerun_vs_first": ratio(main["mirror_rerun_seconds"], main["mirror_seconds"]),
        "mirror_peak_rss_mb": round(main["mirror_peak_rss"] / 1e6, 1),
        "pull_25pct_faults_vs_clean": ratio(main["pull_proxy_faulty_seconds"], main["pull_proxy_clean_seconds"]),
    }
    for label, row in (scale or {}).items():
        for cmd in ("pull", "push", "mirror"):
            r[f"{cmd}_peak_rss_mb_{label}"] = round(row[f"{cmd}_peak_rss"] / 1e6, 1)
    targets = {"pull_vs_skopeo_sync": 0.3, "bundle_vs_unique": 1.001, "push_vs_skopeo_copy": 0.5,
               "pull_rerun_vs_first": 0.05, "push_rerun_vs_first": 0.05, "push_peak_rss_mb": 100,
               "push_peak_rss_mb_small_layers": 100, "pull_peak_rss_mb": 100, "mirror_peak_rss_mb": 100,
               "push_scratch_vs_bundle": 0.05, "mirror_vs_skopeo_copy": 0.5, "mirror_rerun_vs_first": 0.05,
               "pull_25pct_faults_vs_clean": 3.0}
    for key in r:
        if "_peak_rss_mb_" in key and key not in targets:
            targets[key] = 100
    print("\nfigure                              measured   target   verdict")
    for key, value in r.items():
        target = targets.get(key)
        verdict = "" if target is None else ("met" if value <= target else "MISSED")
        shown = f"<= {target}" if target is not None else ""
        print(f"{key:<35} {value:>9}   {shown:<8} {verdict}")
    if scale:
        # flat: no command's peak on the odd-shaped sets more than 20 MB above its peak on the main set
        main_rss = {cmd: r[f"{cmd}_peak_rss_mb"] for cmd in ("pull", "push", "mirror")}
        worst = max(r[f"{cmd}_peak_rss_mb_{label}"] - main_rss[cmd] for label in scale
                    for cmd in ("pull", "push", "mirror"))
        r["peak_rss_growth_mb_vs_main_set"] = round(worst, 1)
        print(f"{'peak_rss_growth_mb_vs_main_set':<35} {round(worst, 1):>9}   {'<= 20':<8} "
              f"{'met (flat)' if worst <= 20 else 'MISSED'}")
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--layer-mib", type=int, default=10, help="own-layer size of the main set (MiB)")
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--big-layer-mib", type=int, default=1024, help="the one layer of the flat-memory row (MiB)")
    ap.add_argument("--many", type=int, default=200, help="tiny images of the flat-memory row")
    ap.add_argument("--no-scale", action="store_true", help="skip the flat-memory rows")
    ap.add_argument("--no-distance", action="store_true", help="skip the real-distance rows (50 ms, 50 MB/s)")
    ap.add_argument("--distance-only", action="store_true", help="only the real-distance rows")
    ap.add_argument("--distance-runs", type=int, default=1, help="pull-bundle runs per distance row (median)")
    args = ap.parse_args()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    print(f"machine: {os.cpu_count()} cores, {memory:.0f} GiB; load average at the start: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    if args.distance_only:
        distance = distance_rows(args.distance_runs)
        WORK.mkdir(parents=True, exist_ok=True)
        (WORK / "distance.json").write_text(json.dumps({"distance": distance, "load_average": os.getloadavg()},
                                                       indent=2))
        return 0
    small = run_set("small", 1 << 20, args.images, compare=False)
    print(f"small set: {small['unique_blob_bytes'] / 1e6:.0f} MB unique, push peak RSS "
          f"{small['push_peak_rss'] / 1e6:.0f} MB", flush=True)
    main_set = run_set("main", args.layer_mib << 20, args.images, compare=True)
    print(json.dumps(main_set, indent=2))
    scale: dict[str, dict] = {}
    if not args.no_scale:
        scale[f"{args.big_layer_mib}mib_layer"] = scale_rows("big", one_big_layer(args.big_layer_mib << 20))
        scale[f"{args.many}_images"] = scale_rows("many", many_tiny_images(args.many))
        print(json.dumps(scale, indent=2))
    distance = {} if args.no_distance else distance_rows(args.distance_runs)
    load = os.getloadavg()
    ratios = report(main_set, small, scale)
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "results.json").write_text(json.dumps({"main": main_set, "small": small, "scale": scale,
                                                   "distance": distance, "ratios": ratios, "load_average": load},
                                                  indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
