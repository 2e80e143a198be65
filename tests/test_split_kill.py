"""SIGKILL at every step of a split bundle's commit: what is left is refused by the reader, or is whole."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_bundle import SPLIT, Layout, build_layout, read_all

from mirrorkit.bundle.reader import BundleReader
from mirrorkit.bundle.writer import write_bundle
from mirrorkit.errors import InputError

NEW_SPLIT = 2 * SPLIT

# Runs write_bundle in a child that kills itself (SIGKILL: no cleanup, no finally) before commit step N.
CHILD = """
import os, signal, sys
from pathlib import Path
from mirrorkit.bundle.writer import write_bundle
from mirrorkit.lock import loads_lock
root, lock_file, out, split, kill_at = sys.argv[1:]
steps = []
def step(what):
    steps.append(what)
    if len(steps) == int(kill_at):
        os.kill(os.getpid(), signal.SIGKILL)
write_bundle(Path(root), loads_lock(Path(lock_file).read_text(), lock_file), Path(out), split=int(split),
             on_commit=step)
print("\\n".join(steps))
"""


def run_child(layout: Layout, lock_file: Path, out: Path, kill_at: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CHILD, str(layout.root), str(lock_file), str(out / "gpu.tar"),
                           str(NEW_SPLIT), str(kill_at)], capture_output=True, text=True, timeout=60)


def state(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if p.name.startswith("gpu.") and p.name.endswith(".tar"))


def looks_whole(volumes: list[Path]) -> bool:
    """What a person with sha256sum sees: every volume has its checksum file and every one passes."""
    sums = [f"{v.name}.sha256" for v in volumes]
    return bool(volumes) and all((v.parent / s).exists() for v, s in zip(volumes, sums, strict=True)) and \
        subprocess.run(["sha256sum", "--quiet", "-c", *sums], cwd=volumes[0].parent,
                       capture_output=True).returncode == 0


def reset(out: Path, older: Layout | None) -> None:
    for path in out.iterdir():
        path.unlink()
    if older is not None:
        write_bundle(older.root, older.lock, out / "gpu.tar", split=SPLIT)   # more, smaller volumes than the new set


@pytest.mark.parametrize("with_older_set", [False, True])
def test_sigkill_at_each_commit_step_never_leaves_a_set_that_passes_but_is_not_whole(
        tmp_path: Path, with_older_set: bool) -> None:
    new = build_layout(tmp_path / "new", seed="new", bundle_id="bundle-new")
    older = build_layout(tmp_path / "old", seed="old", bundle_id="bundle-old") if with_older_set else None
    lock_file = tmp_path / "lock.yaml"
    lock_file.write_text(new.lock.dumps())
    out = tmp_path / "out"
    out.mkdir()

    reset(out, older)
    clean = run_child(new, lock_file, out, 0)
    assert clean.returncode == 0, clean.stderr
    steps = clean.stdout.splitlines()
    assert len(steps) >= 2 * len(state(out))    # (old checksums,) volume renames, checksum renames
    with BundleReader(state(out)) as reader:
        assert reader.lock.id == "bundle-new" and reader.volume_count == len(state(out)) > 2

    outcomes = set()
    for kill_at in range(1, len(steps) + 1):
        reset(out, older)
        res = run_child(new, lock_file, out, kill_at)
        assert res.returncode == -signal.SIGKILL, (kill_at, res.stderr)
        volumes = state(out)
        seems_whole = looks_whole(volumes)
        try:
            with BundleReader(volumes) as reader:
                reader.verify(require_complete=True)
                got = read_all(reader)
                whole = {"bundle-new": new, "bundle-old": older}[reader.lock.id]
        except InputError:
            assert not seems_whole, f"killed before step {kill_at}: every checksum passes but the set is refused"
            outcomes.add("refused")
            continue
        # accepted: then it is one whole set, every blob of its lock, byte for byte
        assert whole is not None and got == whole.blobs, kill_at
        outcomes.add("whole " + reader.lock.id)
    assert "refused" in outcomes
