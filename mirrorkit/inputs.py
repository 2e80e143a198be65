"""``PLAN|BUNDLE`` arguments: a plan file, a bundle lock, or a bundle (tar, volumes, folder)."""

from __future__ import annotations

import re
from pathlib import Path

from mirrorkit.errors import InputError
from mirrorkit.lock import Lock, lock_from_dict
from mirrorkit.plan import Plan, load_plan
from mirrorkit.yamlio import load_mapping


def load_plan_or_lock(path: str | Path) -> tuple[Plan, Lock | None]:
    p = Path(path)
    if p.is_dir() or (p.is_file() and not p.name.endswith((".yaml", ".yml", ".json"))):
        from mirrorkit.bundle.reader import BundleReader

        with BundleReader([p]) as reader:
            return reader.lock.plan, reader.lock
    data = load_mapping(p, "plan or lock")
    if data.get("kind") == "BundleLock":
        lock = lock_from_dict(data, str(p))
        return lock.plan, lock
    if data.get("kind") == "Plan":
        return load_plan(p), None   # read again: an error then names its line
    raise InputError(f"{p}: expected a mirrorkit plan, bundle lock or bundle")


def bundle_volumes(source: str | Path) -> list[Path]:
    """The bundle volumes that belong with a bundle or lock file: NAME.tar, NAME.NNN.tar, .zst forms."""
    source = Path(source)
    name = source.name
    for suffix in (".lock.yaml", ".tar.zst", ".tar"):
        if name.endswith(suffix):
            stem = name[: -len(suffix)]
            break
    else:
        return []
    stem = re.sub(r"\.\d{3}$", "", stem)   # any one volume of a split bundle names them all
    pattern = re.compile(rf"^{re.escape(stem)}(\.\d{{3}})?\.tar(\.zst)?$")
    return sorted(p for p in source.parent.iterdir() if pattern.match(p.name) and p.is_file())
