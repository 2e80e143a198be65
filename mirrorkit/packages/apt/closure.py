"""The closure of the needed names against the driver image's dpkg status: libsolv, in a subprocess.

Why libsolv (measured on this machine against Debian bookworm main amd64, 63k packages, 50 MB,
closure of the newest ``linux-headers-6.1.0-*-amd64``; ``scripts/bench_packages.py``, BENCHMARKS.md
"Driver packages"):

- libsolv (Debian's ``python3-solv``): parse + solve 0.71-0.94 s CPU including the interpreter
  (0.93 s wall on a quiet machine), 60 MB peak RSS, the same 36 packages apt picks against an empty
  status (4 against this machine's).
- ``apt-get --print-uris install`` in its own root (``-o Dir=…``, ``Dir::State::status``): 2.3-2.7 s
  CPU, 58 MB: apt builds its binary cache from the 50 MB list on every run.

libsolv is the faster, it answers in one call with the name, version, file and sha256 of each
package, its problems are explicit, and it runs wherever ``python3-solv`` installs, without apt's
own configuration of the connected machine leaking in. It is the solver dnf and zypper use, not a
hand-written one. It runs under the system interpreter (``/usr/bin/python3``, for which Debian
builds the module) as ``solve_worker.py``, JSON over a pipe.

Like apt (>= 2.3), installed binaries of a source package whose new version is installed are upgraded
with it (``solve_worker``); the real Debian test found this (``linux-libc-dev`` and ``linux-perf`` come
along with ``linux-headers-*-common``).

Sizes are not kept by libsolv's deb reader, so each chosen package's ``Size`` and ``SHA256`` are read
back from its own stanza of the signed index (python-debian), and must agree with libsolv's.
"""

from __future__ import annotations

import gzip
import json
import lzma
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from debian.deb822 import Packages

from mirrorkit.errors import OperationError

SYSTEM_PYTHON = os.environ.get("MIRRORKIT_SOLV_PYTHON", "/usr/bin/python3")
WORKER = Path(__file__).with_name("solve_worker.py")
_TIMEOUT = 600


@dataclass(frozen=True)
class Chosen:
    """One package to carry: where it lives in its repository and how to check it."""

    name: str
    version: str
    repo: str
    location: str
    sha256: str
    size: int


@dataclass
class Solution:
    install: list[Chosen] = field(default_factory=list)
    alone: list[Chosen] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    listed: dict[str, list[str]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def run_solver(indices: Sequence[tuple[str, Path]], status: Path | None, arch: str, install: Sequence[str],
               alone: Sequence[str], prefixes: Sequence[str], where: str) -> Solution:
    """Solve with libsolv; ``indices`` are (repo id, Packages file) pairs, ``status`` the image's dpkg status."""
    request = {"indices": [[rid, str(path)] for rid, path in indices], "status": str(status) if status else None,
               "arch": arch, "install": list(install), "alone": list(alone), "prefixes": list(prefixes)}
    try:
        proc = subprocess.run([SYSTEM_PYTHON, str(WORKER)], input=json.dumps(request).encode(),
                              capture_output=True, timeout=_TIMEOUT, check=False)
    except FileNotFoundError:
        raise OperationError(f"{SYSTEM_PYTHON} not found: the apt closure runs libsolv (python3-solv) "
                             "under the system Python") from None
    except subprocess.TimeoutExpired:
        raise OperationError(f"{where}: the dependency solver did not finish in {_TIMEOUT} s") from None
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        if any("No module named 'solv'" in ln for ln in err):
            raise OperationError("python3-solv is not installed (apt-get install python3-solv): "
                                 "it computes the apt closure")
        raise OperationError(f"{where}: the dependency solver failed: {err[-1] if err else proc.returncode}")
    out: dict[str, Any] = json.loads(proc.stdout)
    if out.get("problems"):
        raise OperationError(f"{where}: the packages cannot be installed together: {'; '.join(out['problems'])}")
    sizes = _stanzas({p["location"] for p in out["install"] + out["alone"]}, [p for _, p in indices])
    return Solution(install=[_chosen(p, sizes, where) for p in out["install"]],
                    alone=[_chosen(p, sizes, where) for p in out["alone"]],
                    missing=list(out["missing"]), listed=out.get("listed", {}), seconds=out.get("seconds", {}))


def _chosen(p: dict[str, Any], stanzas: dict[str, tuple[str, int]], where: str) -> Chosen:
    sha, size = stanzas.get(p["location"], ("", -1))
    if not sha or size < 0:
        raise OperationError(f"{where}: {p['name']}: no SHA256 and Size in the signed index for {p['location']}")
    if p["sha256"] and p["sha256"] != sha:
        raise OperationError(f"{where}: {p['name']}: the index lists two sha256 sums for {p['location']}")
    return Chosen(p["name"], p["version"], p["repo"], p["location"], sha, size)


def read_index(path: Path) -> bytes:
    """A Packages index, decompressed by its name's suffix."""
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    return data


def _stanzas(locations: set[str], indices: Sequence[Path]) -> dict[str, tuple[str, int]]:
    """``Filename`` -> (``SHA256``, ``Size``) from each package's own stanza, for the wanted files only."""
    out: dict[str, tuple[str, int]] = {}
    if not locations:
        return out
    for path in indices:
        data = read_index(path)
        # one C-speed search per wanted file (0.15 s CPU for a 36-package closure in Debian's 50 MB main
        # index), not a Python walk over all 63k stanzas (0.6 s)
        for loc in sorted(locations - set(out)):
            at = data.find(b"\nFilename: " + loc.encode() + b"\n")
            if at < 0:
                continue
            start = data.rfind(b"\n\n", 0, at) + 1
            end = data.find(b"\n\n", at + 1)
            stanza = Packages(data[start:end if end >= 0 else len(data)].decode("utf-8", "replace"))
            try:
                out[loc] = (str(stanza.get("SHA256", "")).lower(), int(stanza.get("Size", -1)))
            except ValueError:
                continue
    return out
