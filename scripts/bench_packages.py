"""Driver packages: closure time and peak RSS against Debian's full real Packages, bytes carried per kernel.

Reads this machine's apt lists (``/var/lib/apt/lists``: Debian bookworm main and bookworm-security,
amd64; run ``apt-get update`` first when empty). Nothing leaves the machine.

- closure: libsolv (``solve_worker.py`` under /usr/bin/python3, as pull-bundle runs it) against the
  full bookworm main index (63k packages, 50 MB), for the newest ``linux-headers-6.1.0-*-amd64``,
  against an empty dpkg status and against this machine's; the same with ``apt-get --print-uris`` in a
  root of its own, the alternative that was measured and not chosen; and mirrorkit's whole
  ``run_solver`` (worker + reading each chosen package's stanza back), in a fresh process.
- bytes: what pull-bundle carries for one kernel (the signed InRelease, the Packages index as the
  mirror serves it, the closure's .debs, sizes from the signed index) against the size of the
  repository (every package its index lists for amd64).

    .venv/bin/python scripts/bench_packages.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LISTS = Path("/var/lib/apt/lists")
WORKER = Path(__file__).resolve().parents[1] / "mirrorkit" / "packages" / "apt" / "solve_worker.py"


def lists_file(pattern: str) -> Path:
    found = sorted(LISTS.glob(pattern))
    if not found:
        sys.exit(f"{LISTS} has no {pattern}: run apt-get update")
    return found[0]


def unpack(src: Path, dest: Path) -> Path:
    if src.name.endswith(".lz4"):
        subprocess.run(["unlz4", "-q", "-f", str(src), str(dest)], check=True)
    else:
        shutil.copyfile(src, dest)
    return dest


CPU: dict[str, float] = {}


def measured(argv: list[str], stdin: bytes | None = None,
             env: dict[str, str] | None = None) -> tuple[float, int, bytes]:
    """Wall seconds, peak RSS (bytes) of the child, its stdout; its CPU seconds in CPU["last"].

    Measured by GNU time, a small process of its own: a child forked straight from this (large) script
    would report this script's RSS at the fork as its peak.
    """
    with tempfile.NamedTemporaryFile("r") as report:
        start = time.monotonic()
        proc = subprocess.run(["/usr/bin/time", "-o", report.name, "-f", "%M %U %S", *argv], input=stdin or b"",
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, check=False)
        wall = time.monotonic() - start
        kib, user, system = report.read().split()[-3:]
    CPU["last"] = float(user) + float(system)
    return wall, int(kib) * 1024, proc.stdout


def worker(index: Path, status: Path | None, name: str) -> tuple[float, int, dict]:
    request = json.dumps({"indices": [["r", str(index)]], "status": str(status) if status else None,
                          "arch": "amd64", "install": [name], "alone": [], "prefixes": []}).encode()
    wall, rss, out = measured(["/usr/bin/python3", str(WORKER)], request)
    result = json.loads(out)
    result["cpu"] = CPU["last"]
    return wall, rss, result


def apt_print_uris(index: Path, inrelease: Path, status: Path, name: str, work: Path) -> tuple[float, int, int]:
    root = work / "aptroot"
    shutil.rmtree(root, ignore_errors=True)
    for folder in ("etc/apt/sources.list.d", "var/lib/apt/lists/partial", "var/cache/apt/archives/partial",
                   "var/lib/dpkg"):
        (root / folder).mkdir(parents=True)
    shutil.copyfile(status, root / "var/lib/dpkg/status")
    os.symlink(index, root / "var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages")
    shutil.copyfile(inrelease, root / "var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease")
    (root / "etc/apt/sources.list").write_text("deb http://deb.debian.org/debian bookworm main\n")
    argv = ["apt-get", f"-oDir={root}", f"-oDir::State::status={root}/var/lib/dpkg/status", "-oDebug::NoLocking=1",
            "-oAPT::Architecture=amd64", "-oDir::Etc::trusted=/usr/share/keyrings/debian-archive-keyring.gpg",
            "-oDir::Cache::pkgcache=", "-oDir::Cache::srcpkgcache=", "-qq", "--print-uris",
            "--no-install-recommends", "install", name]
    wall, rss, out = measured(argv, env={**os.environ, "LC_ALL": "C"})
    CPU.setdefault("apt", 0.0)
    CPU["apt"] = CPU["last"]
    return wall, rss, out.count(b".deb'")


def whole(index: Path, status: Path, name: str) -> tuple[float, int, int]:
    """mirrorkit's run_solver (worker + stanza read-back), in a fresh venv process: its own peak RSS."""
    code = ("import json,sys,time,resource\nfrom pathlib import Path\n"
            "from mirrorkit.packages.apt.closure import run_solver\nt=time.monotonic()\n"
            f"s=run_solver([('r',Path({str(index)!r}))],Path({str(status)!r}),'amd64',[{name!r}],[],[],'bench')\n"
            "print(json.dumps([time.monotonic()-t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss*1024,"
            " len(s.install)]))\n")
    _, _, out = measured([sys.executable, "-c", code])
    wall, rss, count = json.loads(out)
    CPU["whole"] = CPU["last"]          # this process and its libsolv worker, both counted by GNU time
    return wall, rss, count


def sizes(index: Path) -> dict[str, int]:
    data = index.read_bytes()
    return {m.group(1).decode(): int(m.group(2)) for m in
            re.finditer(rb"^Filename: (\S+)\n(?:[^\n]+\n)*?Size: (\d+)$", data, re.M)}


def carried(index: Path, inrelease: Path, status: Path | None, name: str, xz_listed: int) -> dict:
    _, _, out = worker(index, status, name)
    table = sizes(index)
    debs = sum(table[p["location"]] for p in out["install"])
    return {"packages": len(out["install"]), "deb_bytes": debs, "inrelease_bytes": inrelease.stat().st_size,
            "index_bytes": xz_listed, "carried_bytes": debs + inrelease.stat().st_size + xz_listed,
            "repository_bytes": sum(table.values()), "repository_packages": len(table)}


def listed_size(inrelease: Path, rel: str) -> int:
    m = re.search(rb"^ [0-9a-f]{64} +(\d+) " + re.escape(rel.encode()) + rb"$", inrelease.read_bytes(), re.M)
    return int(m.group(1)) if m else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    host_status = Path("/var/lib/dpkg/status")
    with tempfile.TemporaryDirectory(prefix="mirrorkit-bench-pkgs-") as tmp:
        work = Path(tmp)
        empty = work / "empty-status"
        empty.write_text("")
        main_index = unpack(lists_file("*debian_dists_bookworm_main_binary-amd64_Packages*"), work / "Packages")
        main_release = lists_file("*debian_dists_bookworm_InRelease")
        sec_index = unpack(lists_file("*bookworm-security_main_binary-amd64_Packages*"), work / "SecPackages")
        sec_release = lists_file("*bookworm-security_InRelease")
        heads = re.findall(rb"^Package: linux-headers-6\.1\.0-(\d+)-amd64$", main_index.read_bytes(), re.M)
        name = f"linux-headers-6.1.0-{max(int(n) for n in heads)}-amd64"
        count = len(re.findall(rb"^Package: ", main_index.read_bytes(), re.M))
        print(f"machine: {os.cpu_count()} cores; load {os.getloadavg()[0]:.2f}; bookworm main amd64: {count} "
              f"packages, {main_index.stat().st_size / 1e6:.1f} MB; closure of {name}")
        rows: dict[str, dict] = {}
        for label, status in (("empty status", empty), ("this machine's status", host_status)):
            solv = [worker(main_index, status, name) for _ in range(args.runs)]
            apt, apt_cpu = [], []
            for _ in range(args.runs):
                apt.append(apt_print_uris(main_index, main_release, status, name, work))
                apt_cpu.append(CPU["apt"])
            full, full_cpu = [], []
            for _ in range(args.runs):
                full.append(whole(main_index, status, name))
                full_cpu.append(CPU["whole"])
            rows[label] = {
                "libsolv_worker_s": statistics.median(w for w, _, _ in solv),
                "libsolv_worker_cpu_s": statistics.median(o["cpu"] for _, _, o in solv),
                "apt_get_cpu_s": statistics.median(apt_cpu),
                "libsolv_worker_rss_mb": max(r for _, r, _ in solv) / 1e6,
                "libsolv_load_s": statistics.median(o["seconds"]["load"] for _, _, o in solv),
                "libsolv_solve_s": statistics.median(o["seconds"]["solve"] for _, _, o in solv),
                "libsolv_packages": len(solv[0][2]["install"]),
                "apt_get_s": statistics.median(w for w, _, _ in apt), "apt_get_rss_mb": max(r for _, r, _ in apt) / 1e6,
                "apt_get_packages": apt[0][2],
                "run_solver_s": statistics.median(w for w, _, _ in full),
                "run_solver_cpu_s": statistics.median(full_cpu),
                "run_solver_parent_rss_mb": max(r for _, r, _ in full) / 1e6,
            }
        sec_heads = re.findall(rb"^Package: linux-headers-6\.1\.0-(\d+)-amd64$", sec_index.read_bytes(), re.M)
        sec_name = f"linux-headers-6.1.0-{max(int(n) for n in sec_heads)}-amd64"
        bytes_rows = {
            f"bookworm main, {name}, empty status": carried(
                main_index, main_release, empty, name,
                listed_size(main_release, "main/binary-amd64/Packages.xz")),
            f"bookworm main, {name}, this machine's status": carried(
                main_index, main_release, host_status, name,
                listed_size(main_release, "main/binary-amd64/Packages.xz")),
            f"bookworm-security, {sec_name}, this machine's status": carried(
                sec_index, sec_release, host_status, sec_name,
                listed_size(sec_release, "main/binary-amd64/Packages.xz")),
        }
    print(json.dumps({"closure": rows, "bytes": bytes_rows}, indent=2))
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    print("\nfigure (median of runs)                                  measured    target")
    for label, row in rows.items():
        print(f"closure, libsolv worker, {label:<24} {row['libsolv_worker_s']:6.2f} s    < 1 s (wall)")
        print(f"closure, libsolv worker CPU, {label:<20} {row['libsolv_worker_cpu_s']:6.2f} s    < 1 s (CPU)")
        print(f"peak RSS, libsolv worker, {label:<23} {row['libsolv_worker_rss_mb']:6.0f} MB   < 200 MB")
        print(f"closure, mirrorkit run_solver (all), {label:<14} {row['run_solver_s']:6.2f} s wall, "
              f"{row['run_solver_cpu_s']:.2f} s CPU, mirrorkit process {row['run_solver_parent_rss_mb']:.0f} MB")
        print(f"closure, apt-get --print-uris, {label:<18} {row['apt_get_s']:6.2f} s wall, "
              f"{row['apt_get_cpu_s']:.2f} s CPU, {row['apt_get_rss_mb']:.0f} MB (alternative)")
    for label, row in bytes_rows.items():
        print(f"carried {label}: {row['packages']} packages, {row['carried_bytes'] / 1e6:.1f} MB of "
              f"{row['repository_bytes'] / 1e9:.1f} GB ({100 * row['carried_bytes'] / row['repository_bytes']:.3f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
