#!/usr/bin/env python3
"""The rpm family measured on loopback: bytes carried for one kernel, resolve time, libsolv at scale.

1. The test repository (``tests/kit/rpmrepo.py``: two kernels, decoys, BaseOS + AppStream) against
   a driver image whose rpmdb already holds part of the closure: bytes carried for one kernel
   against the repository's size, and ``resolve_rpm``'s wall time (fetch, verify, solve, download).
2. The choice of solver: libsolv in-process against ``dnf --installroot … install --assumeno`` on
   the same repository and image (dnf's own resolution, as the other candidate).
3. libsolv at a distribution's size: a generated ``primary.xml`` of N packages with dependencies
   (RHEL 8 BaseOS + AppStream hold ~25k), loaded and solved in a child process for its peak RSS.

Prints one JSON document (also written to bundles/bench/packages-rpm.json).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from kit import rpmrepo  # noqa: E402
from kit.pgpkey import make_key  # noqa: E402

from mirrorkit.packages.model import Need  # noqa: E402
from mirrorkit.packages.rpm import resolve_rpm  # noqa: E402
from mirrorkit.packages.rpm.needs import rpm_names  # noqa: E402

WORK = ROOT / "bundles" / "bench"


def carried_bytes(result: object) -> tuple[int, int, int]:
    repos = result.repos  # type: ignore[attr-defined]
    meta = sum(f.size for r in repos for f in r.files if f.kind == "metadata")
    pkgs = sum(f.size for r in repos for f in r.files if f.kind == "package")
    count = sum(1 for r in repos for f in r.files if f.kind == "package")
    return meta, pkgs, count


def test_repository(tmp: Path) -> dict[str, object]:
    t0 = time.perf_counter()
    repo = rpmrepo.build(tmp / "www", make_key(tmp / "k1", "Bench Repo"), make_key(tmp / "k2", "Other")).start()
    built = time.perf_counter() - t0
    image = rpmrepo.make_image_root(tmp / "image", [repo.rpms[s.nevra] for s in repo.specs
                                                    if s.name in rpmrepo.INSTALLED])
    kv = f"{rpmrepo.KERNEL_A}.x86_64"
    names, optional = rpm_names("rocky8.9", kv)
    need = Need("rocky8.9", "rpm", kv, "amd64", names, optional)
    source = repo.repo_file(tmp / "user.repo")
    out: dict[str, object] = {"build_repository_s": round(built, 2)}
    tree = repo.root / "good" / "tree"
    repo_bytes = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file())
    repo_pkgs = sum(1 for _ in tree.rglob("*.rpm"))
    for label, root in (("against_image_rpmdb", image), ("against_empty_installed_set", None)):
        times = []
        for n in range(3):
            work = tmp / f"work-{label}-{n}"
            fetcher = rpmrepo.LoopbackFetcher()     # its TLS context set-up is not part of resolving
            t0 = time.perf_counter()
            result = resolve_rpm(source, "rocky8", [need], root, fetcher, work, False)
            times.append(time.perf_counter() - t0)
        meta, pkgs, count = carried_bytes(result)
        out[label] = {"packages": count, "package_bytes": pkgs, "metadata_bytes": meta,
                      "carried_bytes": meta + pkgs, "resolve_s_median": round(statistics.median(times), 3)}
    out["repository"] = {"packages": repo_pkgs, "bytes": repo_bytes}
    carried = out["against_image_rpmdb"]["carried_bytes"]  # type: ignore[index]
    out["carried_fraction"] = round(carried / repo_bytes, 3)
    out["dnf_assumeno_s_median"] = dnf_resolution(repo, image, source, names, tmp)
    repo.stop()
    return out


def dnf_resolution(repo: rpmrepo.TestRepo, image: Path, source: Path, names: tuple[str, ...], tmp: Path) -> float:
    """dnf's own resolution of the same names against the same image (no download): the alternative."""
    times = []
    for n in range(3):
        work = tmp / f"dnf-{n}"
        root = work / "root"
        shutil.copytree(image, root, symlinks=True)
        (work / "home").mkdir()
        (work / "home" / ".rpmmacros").write_text("%_dbpath /var/lib/rpm\n")
        reposdir = work / "repos"
        reposdir.mkdir()
        shutil.copy(source, reposdir / "user.repo")
        argv = ["dnf", "-y", "--noplugins", "--installroot", str(root), f"--setopt=reposdir={reposdir}",
                f"--setopt=cachedir={work / 'cache'}", "--releasever", "8.9", "install", "--assumeno", *names]
        t0 = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, timeout=300, check=False,
                              env={**os.environ, "HOME": str(work / "home"), "LC_ALL": "C"})
        times.append(time.perf_counter() - t0)
        # --assumeno ends with exit 1 after printing the transaction; anything else is a failure
        if b"Transaction Summary" not in proc.stdout:
            raise RuntimeError(f"dnf did not resolve: {proc.stderr.decode(errors='replace')[-800:]}")
    return round(statistics.median(times), 3)


def synthetic_primary(path: Path, count: int) -> None:
    """``count`` packages in rpm-md primary form, package n requiring n//2 and n//3 (a shallow, realistic
    closure), a ``kernel-devel`` requiring the last one."""
    ns = ('<metadata xmlns="http://linux.duke.edu/metadata/common" xmlns:rpm="http://linux.duke.edu/metadata/rpm" '
          f'packages="{count + 1}">\n')
    with path.open("w") as f:
        f.write('<?xml version="1.0" encoding="UTF-8"?>\n' + ns)
        for n in range(count + 1):
            name = "kernel-devel" if n == count else f"pkg{n}"
            reqs = "".join(f'<rpm:entry name="pkg{m}"/>' for m in ({n // 2, n // 3} if n != count else {count - 1})
                           if m != n)
            f.write(f'<package type="rpm"><name>{name}</name><arch>x86_64</arch>'
                    f'<version epoch="0" ver="1.{n % 50}" rel="1.el8"/>'
                    f'<checksum type="sha256" pkgid="YES">{n:064x}</checksum><summary>s</summary>'
                    f'<size package="{1000 + n}" installed="1" archive="1"/>'
                    f'<location href="Packages/{name}-1.{n % 50}-1.el8.x86_64.rpm"/>'
                    f'<format><rpm:provides><rpm:entry name="{name}" flags="EQ" epoch="0" ver="1.{n % 50}" '
                    f'rel="1.el8"/><rpm:entry name="lib{n}.so()(64bit)"/></rpm:provides>'
                    f'<rpm:requires>{reqs}</rpm:requires></format></package>\n')
        f.write("</metadata>\n")


CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from mirrorkit.packages.rpm.solver import ClosureSolver, SiteMetadata
t0 = time.perf_counter()
solver = ClosureSolver([], [SiteMetadata("big", Path(sys.argv[1]), None)], "x86_64", True)
loaded = time.perf_counter() - t0
t0 = time.perf_counter()
solution = solver.solve(["kernel-devel"], "", "bench")
solved = time.perf_counter() - t0
print(json.dumps({"load_s": round(loaded, 3), "solve_s": round(solved, 4), "closure": len(solution.picks),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
"""


def at_scale(tmp: Path, count: int) -> dict[str, object]:
    primary = tmp / "primary.xml"
    synthetic_primary(primary, count)
    proc = subprocess.run([sys.executable, "-c", CHILD, str(primary)], capture_output=True, text=True, check=True)
    out: dict[str, object] = json.loads(proc.stdout)
    out["packages"] = count + 1
    out["primary_mb"] = round(primary.stat().st_size / 1e6, 1)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--packages", type=int, default=40000, help="size of the generated primary")
    args = parser.parse_args()
    results: dict[str, object] = {"load_average_1m_before": round(os.getloadavg()[0], 1)}
    with tempfile.TemporaryDirectory(prefix="bench-rpm-") as tmp:
        results["test_repository"] = test_repository(Path(tmp))
        results["libsolv_at_scale"] = at_scale(Path(tmp), args.packages)
    results["load_average_1m_after"] = round(os.getloadavg()[0], 1)   # the machine is shared: read figures with it
    results["python_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "packages-rpm.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
