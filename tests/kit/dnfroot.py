"""The far side's check: the real dnf, in its own root, against the carried partial mirror.

The mirror is written from ``RepoCarry.files`` as ``push-bundle --packages-dir`` lays it out
(``<os>/<name>/<path>``) and served by a plain static server; the repo files are exactly the
ConfigMap's (``repo_text`` with ``@URL@`` replaced). dnf runs with ``--installroot`` on a copy of the
driver image's root (its rpmdb decides what is installed), ``gpgcheck`` and ``repo_gpgcheck`` on, the
repositories' key imported by dnf itself (``-y``), as the driver container's ``dnf`` would run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from mirrorkit.packages.model import RepoCarry


def write_mirror(repos: Sequence[RepoCarry], files_dir: Path, dest: Path) -> Path:
    """Every carried file at ``dest/<os>/<name>/<path>``, copied from its sha256-named blob."""
    for repo in repos:
        for f in repo.files:
            target = dest / repo.os / repo.name / f.path
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(files_dir / f.sha256, target)
    return dest


def repo_files(repos: Sequence[RepoCarry], base_url: str) -> dict[str, str]:
    """The ConfigMap's keys and texts: each repo file pointing at ``base_url/<os>/<name>/``."""
    return {r.repo_file: r.repo_text.replace("@URL@", f"{base_url}/{r.os}/{r.name}/") for r in repos}


class DnfError(RuntimeError):
    pass


def dnf_download(image_root: Path, repo_texts: dict[str, str], names: Sequence[str], work: Path,
                 releasever: str, weak_deps: bool = False,
                 echo: Callable[[list[str], str], None] | None = None) -> list[str]:
    """``dnf makecache`` then ``dnf install --downloadonly NAMES`` in a copy of ``image_root``.

    Returns the downloaded rpm file names; raises DnfError with dnf's own words when it refuses.
    ``echo(argv, output)`` sees each dnf run that succeeded (``make demo`` shows them).
    """
    root = work / "root"
    shutil.copytree(image_root, root, symlinks=True)
    reposdir = work / "yum.repos.d"
    reposdir.mkdir()
    for name, text in repo_texts.items():
        (reposdir / name).write_text(text)
    conf = work / "dnf.conf"
    conf.write_text(f"[main]\ngpgcheck=1\nrepo_gpgcheck=0\ninstall_weak_deps={int(weak_deps)}\nbest=True\n"
                    "skip_if_unavailable=False\n")
    # Debian's rpm keeps its own database in ~/.rpmdb; RHEL's is /var/lib/rpm. A HOME with that one
    # macro makes dnf's librpm read the image's database inside --installroot, as on RHEL.
    home = work / "home"
    home.mkdir()
    (home / ".rpmmacros").write_text("%_dbpath /var/lib/rpm\n")
    env = {**os.environ, "HOME": str(home), "LC_ALL": "C"}
    out = work / "downloaded"
    out.mkdir()
    base = ["dnf", "-y", "--noplugins", "--installroot", str(root), "--config", str(conf),
            f"--setopt=reposdir={reposdir}", f"--setopt=cachedir={work / 'cache'}", "--releasever", releasever]
    for argv in ([*base, "makecache"],
                 [*base, "install", "--downloadonly", f"--downloaddir={out}", *names]):
        proc = subprocess.run(argv, capture_output=True, timeout=300, check=False, env=env)
        if proc.returncode != 0:
            text = (proc.stdout + proc.stderr).decode(errors="replace")
            raise DnfError(f"{' '.join(argv[len(base) - 2:len(base) + 2])} failed ({proc.returncode}): {text[-2500:]}")
        if echo is not None:
            echo(argv, (proc.stdout + proc.stderr).decode(errors="replace"))
    return sorted(p.name for p in out.glob("*.rpm"))
