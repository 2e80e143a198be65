"""``PLAN|BUNDLE`` arguments: a plan file, a bundle lock, or a bundle (tar, volumes, folder)."""

from __future__ import annotations

from pathlib import Path

from mirrorkit.errors import InputError
from mirrorkit.knownkeys import UnknownKeyError, located
from mirrorkit.lock import KIND as LOCK_KIND
from mirrorkit.lock import Lock, lock_from_dict
from mirrorkit.plan import KIND as PLAN_KIND
from mirrorkit.plan import Plan, load_plan
from mirrorkit.yamlio import load_mapping, read_text


def load_plan_or_lock(path: str | Path) -> tuple[Plan, Lock | None]:
    p = Path(path)
    if p.is_dir() or (p.is_file() and not p.name.endswith((".yaml", ".yml", ".json"))):
        from mirrorkit.bundle.reader import BundleReader

        with BundleReader([p]) as reader:
            return reader.lock.plan, reader.lock
    data = load_mapping(p, "plan or lock")
    if data.get("kind") == LOCK_KIND:
        try:
            lock = lock_from_dict(data, str(p))
        except UnknownKeyError as exc:    # read again only now, for the line (locks can be big)
            raise located(exc, read_text(p, "bundle lock"), str(p)) from None
        return lock.plan, lock
    if data.get("kind") == PLAN_KIND:
        return load_plan(p), None   # read again: an error then names its line
    raise InputError(f"{p}: expected a mirrorkit plan, bundle lock or bundle")
