"""The libsolv closure of apt packages, run by the system Python (``/usr/bin/python3``) in its own process.

Debian's ``python3-solv`` is built for the system interpreter, and the PyPI ``solv`` wheel reads rpm-md
only (no ``add_debpackages``/``add_debdb``), so this file imports nothing from mirrorkit and runs as a
script: JSON in on stdin, JSON out on stdout. See ``mirrorkit.packages.apt.closure`` for why libsolv.

Input: ``{"indices": [[repo_id, path], ...], "status": path|null, "arch": "amd64",
"install": [names], "alone": [names], "prefixes": [name prefixes to list]}``.
Output: ``{"install": [pkg...], "alone": [pkg...], "missing": [names], "problems": [text],
"listed": {prefix: [names]}, "seconds": {...}}`` where a pkg is ``{"name", "version", "arch",
"repo", "location", "sha256"}``.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import time
from typing import Any


def main() -> int:
    import solv  # type: ignore[import-not-found,unused-ignore]

    req = json.load(sys.stdin)
    t0 = time.monotonic()
    pool = solv.Pool()
    pool.setdisttype(solv.Pool.DISTTYPE_DEB)
    pool.setarch(req["arch"])
    repos: dict[str, Any] = {}
    for repo_id, path in req["indices"]:
        repo = repos.get(repo_id) or pool.add_repo(str(repo_id))
        repos[repo_id] = repo
        f = solv.xfopen(path)
        if f is None:
            print(json.dumps({"error": f"cannot open {path}"}))
            return 1
        repo.add_debpackages(f)
        f.close()
    installed = pool.add_repo("@installed")
    if req.get("status"):
        # the image's status file, read as dpkg would: only stanzas whose Status says "installed" count
        # (add_debdb reads the host's own /var/lib/dpkg/status unless told of a root; never that)
        with open(req["status"], "rb") as fh:
            stanzas = fh.read().replace(b"\r\n", b"\n").split(b"\n\n")
        kept = [st for st in stanzas if re.search(rb"^Status: \S+ \S+ (installed|half-configured|unpacked)\s*$",
                                                   st, re.M)]
        with tempfile.NamedTemporaryFile(suffix=".status") as tmp:
            tmp.write(b"\n\n".join(kept) + b"\n")
            tmp.flush()
            f = solv.xfopen(tmp.name)
            installed.add_debpackages(f)
            f.close()
    pool.installed = installed
    pool.addfileprovides()
    pool.createwhatprovides()
    t1 = time.monotonic()

    def describe(s: Any) -> dict[str, Any]:
        chk = s.lookup_checksum(solv.SOLVABLE_CHECKSUM)
        location, _ = s.lookup_location()
        return {"name": s.name, "version": s.evr, "arch": s.arch, "repo": s.repo.name, "location": location,
                "sha256": chk.hex() if chk is not None and chk.typestr() == "sha256" else ""}

    def candidates(name: str) -> list[Any]:
        sel = pool.select(name, solv.Selection.SELECTION_NAME)
        return [s for s in sel.solvables() if s.repo is not installed]

    missing = [n for n in req["install"] + req["alone"] if not candidates(n)]
    jobs = [pool.Job(solv.Job.SOLVER_INSTALL | solv.Job.SOLVER_SOLVABLE_NAME, pool.str2id(n))
            for n in req["install"] if n not in missing]
    def source_of(s: Any) -> tuple[str, str]:
        return s.lookup_str(solv.SOLVABLE_SOURCENAME) or s.name, s.lookup_str(solv.SOLVABLE_SOURCEEVR) or s.evr

    solver = pool.Solver()
    solver.set_flag(solv.Solver.SOLVER_FLAG_IGNORE_RECOMMENDED, 1)
    problems = [str(p) for p in solver.solve(jobs)] if jobs else []
    install = []
    upgraded: set[int] = set()
    for _ in range(8):
        if not jobs or problems:
            break
        new = solver.transaction().newsolvables()
        # apt (>= 2.3) upgrades every installed binary of a source package whose new version it installs
        # ("upgrade by source package"): linux-headers-*-common brings linux-libc-dev and linux-perf along
        sources = {source_of(x) for x in new}
        extra = []
        for have in installed.solvables:
            name, _evr = source_of(have)
            for cand in candidates(have.name):
                if cand.id not in upgraded and source_of(cand) in sources and source_of(cand)[0] == name \
                        and cand.evrcmp(have) > 0:
                    extra.append(cand)
        if not extra:
            break
        upgraded |= {c.id for c in extra}
        jobs = jobs + [pool.Job(solv.Job.SOLVER_INSTALL | solv.Job.SOLVER_SOLVABLE, c.id) for c in extra]
        problems = [str(p) for p in solver.solve(jobs)]
    if jobs and not problems:
        install = [describe(s) for s in solver.transaction().newsolvables()]
    alone = []
    for name in req["alone"]:
        found = candidates(name)
        if found:
            best = found[0]
            for s in found[1:]:
                if s.evrcmp(best) > 0:
                    best = s
            alone.append(describe(best))
    listed = {p: sorted({s.name for s in pool.solvables_iter() if s.name.startswith(p) and s.repo is not installed})
              for p in req.get("prefixes", [])}
    t2 = time.monotonic()
    json.dump({"install": install, "alone": alone, "missing": missing, "problems": problems, "listed": listed,
               "seconds": {"load": round(t1 - t0, 4), "solve": round(t2 - t1, 4)}}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
