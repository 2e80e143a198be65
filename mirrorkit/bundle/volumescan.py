"""Opening a bundle's volumes: each one's description and headers checked before any blob is read.

A tar volume's leading small files (``volume_meta``) are read first and nothing in them
is believed yet; a plain tar volume then gets one header pass that checks every header
and notes where each blob's data starts (what lets the reader hand out blobs in
parallel, and a server hand byte ranges to the kernel). An unpacked folder is walked
instead. ``check_together`` refuses volumes that are not of one bundle, or overlap.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mirrorkit.bundle.guard import (
    GuardedTarInfo,
    check_blob,
    check_end,
    check_part,
    detect,
    member_kind,
    open_regular,
    open_tar,
    read_member,
    reading,
    walk_dir,
)
from mirrorkit.bundle.volumes import (
    META_CAPS,
    META_ORDER,
    SIGNATURE_MEMBER,
    Part,
    parse_volume_yaml,
    read_checksum,
    read_volume_yaml,
)
from mirrorkit.errors import InputError
from mirrorkit.lock import Lock, loads_lock


@dataclass
class Volume:
    path: Path
    kind: str  # "tar", "zstd" or "dir"
    lock: Lock
    lock_hash: str
    meta: dict[str, bytes]
    index: int = 0
    count: int = 1
    blobs: dict[str, int] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)  # the lock's, looked up once per blob header
    offsets: dict[str, int] = field(default_factory=dict)
    checksum: str | None = None
    parts: dict[str, Part] = field(default_factory=dict)          # of blobs split across volumes
    joined: dict[str, list[tuple[Path, int, int]]] = field(default_factory=dict)  # an unpacked folder's parts
    part_offsets: dict[str, int] = field(default_factory=dict)


def _head(where: str, meta: dict[str, bytes]) -> tuple[Lock, str]:
    try:
        text = meta["bundle.yaml"].decode()
    except UnicodeDecodeError:
        raise InputError(f"{where}: bundle.yaml is not UTF-8") from None
    lock = loads_lock(text, f"{where}: bundle.yaml")
    for name in ("oci-layout", "index.json"):
        try:
            doc = json.loads(meta[name])
        except (ValueError, RecursionError):
            doc = None
        if not isinstance(doc, dict):
            raise InputError(f"{where}: {name} is not a JSON object")
    return lock, hashlib.sha256(meta["bundle.yaml"]).hexdigest()


def open_volume(path: Path) -> Volume:
    where = str(path)
    kind, meta = volume_meta(path)
    lock, lock_hash = _head(where, meta)
    index, count, listed, parts = read_volume_yaml(meta["volume.yaml"], where, lock)
    vol = Volume(path, kind, lock, lock_hash, meta, index, count, listed, lock.blob_sizes(),
                  checksum=read_checksum(path), parts=parts)
    if kind == "tar":
        _scan_offsets(vol)
    return vol


def _scan_offsets(vol: Volume) -> None:
    """One header pass over a plain tar: every header checked, every blob's data offset noted."""
    where = str(vol.path)
    with open(vol.path, "rb") as f, reading(where), tarfile.open(fileobj=f, mode="r:",
                                                                 tarinfo=GuardedTarInfo) as tar:
        seen: set[str] = set()
        for position, member in enumerate(tar):
            kind = member_kind(where, member, position, seen)
            if kind == "blob":
                digest = "sha256:" + member.name.removeprefix("blobs/sha256/")
                check_blob(where, digest, member.size, vol.sizes, vol.blobs)
                vol.offsets[digest] = member.offset_data
            elif kind == "part":
                vol.part_offsets[check_part(where, member, vol.parts).digest] = member.offset_data
            tar.members.clear()  # type: ignore[attr-defined]  # keep memory flat; iteration goes on with next()
        check_end(tar, where)
    for digest in [*vol.blobs, *vol.parts]:
        if digest not in vol.offsets and digest not in vol.part_offsets:
            raise InputError(f"{where}: truncated or incomplete: blob {digest} listed in volume.yaml is missing")


def open_dir(root: Path) -> Volume:
    where = str(root)
    files: dict[str, os.stat_result] = {}
    blobs_seen: dict[str, int] = {}
    cut: dict[str, list[tuple[int, Path, int]]] = {}     # the unpacked parts of split blobs
    for rel in walk_dir(root, ""):
        st = (root / rel).lstat()
        if rel.startswith("blobs/sha256/"):
            blobs_seen["sha256:" + rel.removeprefix("blobs/sha256/")] = st.st_size
        elif rel.startswith("parts/sha256/"):
            hexdigest, number = rel.removeprefix("parts/sha256/").split(".")
            cut.setdefault("sha256:" + hexdigest, []).append((int(number), root / rel, st.st_size))
        else:
            files[rel] = st
            if st.st_size > META_CAPS[rel]:
                raise InputError(f"{where}: {rel} is {st.st_size} bytes, larger than the {META_CAPS[rel]} allowed")
    for name in ("bundle.yaml", "oci-layout", "index.json"):
        if name not in files:
            raise InputError(f"{where}: not an unpacked bundle: {name} is missing")
    meta = {name: _read_capped(root, name) for name in files}
    lock, lock_hash = _head(where, meta)
    if "volume.yaml" in meta:
        # an unpacked bundle may merge several volumes; only the id must agree
        parse_volume_yaml(meta["volume.yaml"], where, lock)
    sizes = lock.blob_sizes()
    for digest, size in blobs_seen.items():
        check_blob(where, digest, size, sizes, None)
    joined: dict[str, list[tuple[Path, int, int]]] = {}
    for digest, parts in cut.items():
        parts.sort()
        if [n for n, _, _ in parts] != list(range(len(parts))) or digest in blobs_seen:
            raise InputError(f"{where}: the parts of blob {digest} are not numbered 000 up, once each")
        check_blob(where, digest, sum(size for _, _, size in parts), sizes, None)
        joined[digest] = [(path, 0, size) for _, path, size in parts]
        blobs_seen[digest] = sizes[digest]
    return Volume(root, "dir", lock, lock_hash, meta, blobs=blobs_seen, sizes=sizes, joined=joined)


def check_together(volumes: list[Volume]) -> None:
    first = volumes[0]
    with_sum = [v for v in volumes if v.checksum is not None]
    if with_sum and len(with_sum) < len(volumes):
        bare = next(v for v in volumes if v.checksum is None)
        raise InputError(f"{bare.path}: incomplete set: its .sha256 is missing while {with_sum[0].path.name} "
                         "has one (a write or copy was interrupted); write or copy the bundle again")
    by_index: dict[int, Volume] = {}
    home: dict[str, Volume] = {}
    for vol in volumes:
        if vol.lock.id != first.lock.id:
            raise InputError(f"volumes from two different bundles: {first.path} has id {first.lock.id}, "
                             f"{vol.path} has id {vol.lock.id}")
        if vol.lock_hash != first.lock_hash:
            raise InputError(f"{first.path} and {vol.path} carry different locks under the same id {vol.lock.id}")
        for name in ("oci-layout", "index.json", SIGNATURE_MEMBER):
            if vol.meta.get(name) != first.meta.get(name):
                raise InputError(f"{first.path} and {vol.path} carry different {name} files")
        if vol.count != first.count:
            raise InputError(f"{first.path} says the bundle has {first.count} volumes, {vol.path} says {vol.count}")
        if vol.index in by_index:
            raise InputError(f"{by_index[vol.index].path} and {vol.path} are both volume {vol.index + 1} "
                             f"of {vol.count}")
        by_index[vol.index] = vol
        for digest in vol.blobs:
            if digest in home:
                raise InputError(f"blob {digest} is in both {home[digest].path} and {vol.path}")
            home[digest] = vol
    for vol in volumes:
        for digest in vol.parts:
            if digest in home:
                raise InputError(f"blob {digest} is whole in {home[digest].path} and in parts in {vol.path}")


@dataclass(frozen=True)
class LockHead:
    """A bundle's lock and lock signature as raw bytes, read before anything in them is believed."""

    where: str
    lock: bytes
    signature: bytes | None


def volume_meta(path: Path) -> tuple[str, dict[str, bytes]]:
    """A tar volume's kind and its leading small files (``META_ORDER``, then the signature if any).

    Only headers and these capped members are read; nothing is parsed, so a caller
    can check the lock's signature before it trusts a single byte of the lock.
    """
    where = str(path)
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise InputError(f"{path}: not a regular file")
    except OSError as exc:
        raise InputError(f"cannot read bundle volume {path}: {exc.strerror or exc}") from None
    kind = detect(path)
    meta: dict[str, bytes] = {}
    with open(path, "rb") as f, reading(where):
        tar = open_tar(f, kind)
        seen: set[str] = set()
        for position, member in enumerate(tar):
            if position == len(META_ORDER) and member.name != SIGNATURE_MEMBER:
                break                        # an unsigned bundle: its blobs start here
            member_kind(where, member, position, seen)
            meta[member.name] = read_member(tar, member, where)
            if position == len(META_ORDER):
                break
    for name in META_ORDER:
        if name not in meta:
            raise InputError(f"{where}: not a mirrorkit bundle volume: {name} is missing")
    return kind, meta


def _read_capped(root: Path, name: str) -> bytes:
    where = str(root)
    f, _ = open_regular(root / name, where)
    with f:
        data = f.read(META_CAPS[name] + 1)
    if len(data) > META_CAPS[name]:
        raise InputError(f"{where}: {name} is larger than the {META_CAPS[name]} bytes allowed")
    return data


def lock_heads(paths: Sequence[Path | str]) -> list[LockHead]:
    """The raw lock and signature of each given volume, or of one unpacked bundle folder."""
    out = []
    for p in (Path(p) for p in paths):
        if p.is_dir():
            sig = p / SIGNATURE_MEMBER
            out.append(LockHead(str(p), _read_capped(p, "bundle.yaml"),
                                _read_capped(p, SIGNATURE_MEMBER) if sig.exists() or sig.is_symlink() else None))
        else:
            _, meta = volume_meta(p)
            out.append(LockHead(str(p), meta["bundle.yaml"], meta.get(SIGNATURE_MEMBER)))
    return out
