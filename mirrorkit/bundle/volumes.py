"""What a bundle volume is called and what its small files say: names, volume.yaml, .sha256.

A volume is a complete tar holding, in this order: ``bundle.yaml`` (the whole
lock), ``volume.yaml`` (bundle id, volume index and count, the blobs in this
volume), ``oci-layout``, ``index.json``, for a signed bundle ``bundle.yaml.sig``
(the lock's signature), then its share of ``blobs/sha256/<hex>``. Every volume repeats the lock, so each one can be
checked on its own and the volumes can be loaded in any order.

A blob larger than what one volume holds (``--split`` is a hard limit) is cut
into parts, ``parts/sha256/<hex>.000``, ``.001``, ... each at the end or start
of consecutive volumes, and listed under ``parts`` in volume.yaml with its byte
range. Readers put the parts back together while streaming and hash the whole
blob against its digest; ``cat parts/sha256/<hex>.*`` rebuilds it by hand.
volume.yaml also records the ``split`` it was written with, so a rerun asking
for another size knows the volumes on disk are not what was asked for.

Volume names: without ``split`` the bundle is the single file ``output``. With
``split`` the ``.tar`` / ``.tar.zst`` suffix is taken off ``output`` and the
volumes are ``STEM.000.tar``, ``STEM.001.tar``, ... (``STEM.000.tar.zst``, ...
when compressed), so every volume still ends in a suffix tar tools recognise.
Each volume gets a ``<volume>.sha256`` file beside it in ``sha256sum`` format.
Writer and reader both import these rules from here, so they cannot drift apart.
"""
from __future__ import annotations

import re
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

import yaml

from mirrorkit.errors import InputError
from mirrorkit.lock import API_VERSION, Lock
from mirrorkit.refs import is_digest
from mirrorkit.yamlio import parse_yaml

MiB = 1 << 20
CHUNK = MiB              # blobs move in chunks of this size: memory stays flat whatever the layer
SMALL_LIMIT = 4 * MiB    # manifests are held whole, so their size is capped (registries cap them too)
VOLUME_KIND = "BundleVolume"
META_ORDER = ("bundle.yaml", "volume.yaml", "oci-layout", "index.json")
# a signed bundle's lock signature (cosign's blob-signature form, mirrorkit.trust.bundlesig): the member
# right after META_ORDER, in every volume, so each volume can prove its lock on its own
SIGNATURE_MEMBER = "bundle.yaml.sig"
META_CAPS = {"bundle.yaml": 64 * MiB, "volume.yaml": 16 * MiB, "oci-layout": 64 << 10, "index.json": 16 * MiB,
             SIGNATURE_MEMBER: 64 << 10}
DIR_ENTRIES = ("blobs", "blobs/sha256", "parts", "parts/sha256")
VOLUME_NUMBER = r"\.\d{3,}"   # STEM.000.tar ... (more digits past 999 volumes)
SHA_FILE_CAP = 4096      # a .sha256 file is one line; a bigger one is not ours to parse

Progress = Callable[[int], None]


@dataclass(frozen=True)
class Piece:
    """What a volume carries of one blob: all of it (``part`` None) or the byte range
    ``offset``..``offset + length`` as part number ``part``."""

    digest: str
    size: int
    path: Path
    offset: int = 0
    length: int = -1          # -1: the whole blob
    part: int | None = None

    @property
    def nbytes(self) -> int:
        return self.size if self.length < 0 else self.length

    @property
    def member(self) -> str:
        hexdigest = self.digest.removeprefix("sha256:")
        return f"blobs/sha256/{hexdigest}" if self.part is None else part_member(hexdigest, self.part)


@dataclass(frozen=True)
class Part:
    """One part of a split blob as volume.yaml lists it (the reader's view)."""

    digest: str
    size: int       # the whole blob's
    index: int
    offset: int
    length: int


def part_member(hexdigest: str, index: int) -> str:
    return f"parts/sha256/{hexdigest}.{index:03d}"


def volume_paths(output: Path, count: int, compress: str | None = None, split: bool = False) -> list[Path]:
    """Where ``write_bundle`` puts its volumes (see the module docstring for the scheme)."""
    output = Path(output)
    if not split:
        return [output]
    suffix = ".tar.zst" if compress == "zstd" else ".tar"
    stem = output.name.removesuffix(suffix)
    width = max(3, len(str(count - 1)))
    return [output.with_name(f"{stem}.{i:0{width}d}{suffix}") for i in range(count)]


def older_volumes(output: Path, compress: str | None, split: bool, keep: list[Path]) -> list[Path]:
    """Volumes of an earlier bundle under the same name that the new set would leave behind: a split set
    of more volumes, a split set where one file is written now (or the other way round), the other
    compression's files. Left there, they would be read as part of the new bundle."""
    output = Path(output)
    suffix = ".tar.zst" if compress == "zstd" else ".tar"
    pattern = numbered(output.name.removesuffix(suffix), r"\.tar(?:\.zst)?", optional=True)
    try:
        names = sorted(p.name for p in output.parent.iterdir())
    except OSError:
        return []
    return [output.with_name(n) for n in names if pattern.fullmatch(n) and output.with_name(n) not in keep]


def numbered(stem: str, suffix: str, optional: bool = False) -> re.Pattern[str]:
    """``STEM.NNN<suffix>`` as ``volume_paths`` names split volumes: three digits or more.

    ``suffix`` is a regular expression; ``optional`` also matches the unsplit ``STEM<suffix>``.
    """
    number = rf"(?:{VOLUME_NUMBER})" + ("?" if optional else "")
    return re.compile(re.escape(stem) + number + suffix)


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
    stem = re.sub(VOLUME_NUMBER + "$", "", stem)   # any one volume of a split bundle names them all
    pattern = numbered(stem, r"\.tar(?:\.zst)?", optional=True)
    found = [p for p in source.parent.iterdir() if pattern.fullmatch(p.name) and p.is_file()]
    # by volume number, not text: STEM.1000.tar comes after STEM.999.tar
    return sorted(found, key=lambda p: (len(p.name.split(".tar")[0]), p.name))


def sibling_volumes(volume: Path, count: int) -> list[Path] | None:
    """Every volume's path of the split set ``volume`` belongs to (by the naming scheme), or None."""
    for suffix in (".tar.zst", ".tar"):
        match = re.fullmatch(r"(.+)" + VOLUME_NUMBER + re.escape(suffix), volume.name)
        if match:
            return volume_paths(volume.with_name(match.group(1) + suffix), count,
                                "zstd" if suffix == ".tar.zst" else None, split=True)
    return None


def checksum_path(volume: Path) -> Path:
    """The ``sha256sum``-format file beside a volume."""
    return volume.with_name(volume.name + ".sha256")


def volume_yaml(bundle_id: str, index: int, count: int, blobs: list[tuple[str, int]],
                parts: Sequence[Piece] = (), split: int | None = None) -> bytes:
    doc: dict[str, Any] = {"apiVersion": API_VERSION, "kind": VOLUME_KIND, "bundle": bundle_id, "index": index,
                           "count": count, "blobs": [{"digest": d, "size": s} for d, s in blobs]}
    if parts:
        doc["parts"] = [{"digest": p.digest, "size": p.size, "part": p.part, "offset": p.offset, "length": p.nbytes}
                        for p in parts]
    if split is not None:
        doc["split"] = split
    return yaml.safe_dump(doc, sort_keys=False, width=120).encode()



def parse_volume_yaml(data: bytes, where: str, lock: Lock) -> tuple[int, int, dict[str, int]]:
    """Index, count and whole blobs of a volume (see ``volume_parts`` for the parts of split blobs)."""
    index, count, listed, _ = read_volume_yaml(data, where, lock)
    return index, count, listed


def read_volume_yaml(data: bytes, where: str, lock: Lock) -> tuple[int, int, dict[str, int], dict[str, Part]]:
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise InputError(f"{where}: volume.yaml is not UTF-8 text") from None
    doc = parse_yaml(text, f"{where}: volume.yaml")
    if not isinstance(doc, dict) or doc.get("kind") != VOLUME_KIND or doc.get("apiVersion") != API_VERSION:
        raise InputError(f"{where}: volume.yaml is not a mirrorkit volume description")
    if doc.get("bundle") != lock.id:
        raise InputError(f"{where}: volume.yaml names bundle {doc.get('bundle')!r} but bundle.yaml has id {lock.id!r}")
    index, count = doc.get("index"), doc.get("count")
    if not is_count(count) or count < 1 or not is_count(index) or not 0 <= index < count:
        raise InputError(f"{where}: volume.yaml has an invalid index {index!r} of count {count!r}")
    if not isinstance(doc.get("blobs"), list):
        raise InputError(f"{where}: volume.yaml 'blobs' must be a list")
    sizes = lock.blob_sizes()
    listed: dict[str, int] = {}
    for entry in doc["blobs"]:
        digest = entry.get("digest") if isinstance(entry, dict) else None
        size = entry.get("size") if isinstance(entry, dict) else None
        if not isinstance(digest, str) or not is_digest(digest) or not is_count(size):
            raise InputError(f"{where}: volume.yaml has a malformed blob entry")
        if digest in listed:
            raise InputError(f"{where}: volume.yaml lists blob {digest} twice")
        if sizes.get(digest) != size:
            raise InputError(f"{where}: volume.yaml lists blob {digest} ({size} bytes), which the lock does not "
                             "carry with that size")
        listed[digest] = size
    return index, count, listed, _parts(doc.get("parts", []), where, sizes, listed)


def _parts(entries: Any, where: str, sizes: dict[str, int], listed: dict[str, int]) -> dict[str, Part]:
    """volume.yaml's parts: a blob the lock carries, at most one part of it per volume, a range inside it."""
    if not isinstance(entries, list):
        raise InputError(f"{where}: volume.yaml 'parts' must be a list")
    parts: dict[str, Part] = {}
    for entry in entries:
        values = [entry.get(k) if isinstance(entry, dict) else None for k in ("digest", "size", "part", "offset",
                                                                               "length")]
        digest, numbers = values[0], values[1:]
        if not isinstance(digest, str) or not is_digest(digest) or not all(is_count(v) for v in numbers):
            raise InputError(f"{where}: volume.yaml has a malformed part entry")
        size, number, offset, length = (int(v) for v in numbers)   # type: ignore[arg-type]  # counts, checked
        if digest in parts or digest in listed:
            raise InputError(f"{where}: volume.yaml lists blob {digest} twice")
        if sizes.get(digest) != size:
            raise InputError(f"{where}: volume.yaml lists a part of blob {digest} ({size} bytes), which the lock "
                             "does not carry with that size")
        if length < 1 or offset + length > size:
            raise InputError(f"{where}: volume.yaml part {number} of blob {digest} lies outside its {size} bytes")
        parts[digest] = Part(digest, size, number, offset, length)
    return parts


def written_split(data: bytes) -> int | None:
    """The ``split`` a volume's volume.yaml records (None: written whole, or by an older mirrorkit)."""
    try:
        doc = yaml.safe_load(data)
    except yaml.YAMLError:
        return None
    value = doc.get("split") if isinstance(doc, dict) else None
    return value if is_count(value) else None


def is_count(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0



def read_checksum(path: Path) -> str | None:
    """The hex digest from ``<volume>.sha256`` beside a volume, if there is one (it is untrusted too)."""
    sha = checksum_path(path)
    try:
        st = sha.lstat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InputError(f"cannot read {sha}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode) or st.st_size > SHA_FILE_CAP:
        raise InputError(f"{sha}: not a sha256sum file")
    try:
        text = sha.read_bytes().decode()
    except (OSError, UnicodeDecodeError):
        raise InputError(f"{sha}: not a sha256sum file") from None
    match = re.fullmatch(r"([0-9a-f]{64}) [ *](.+)\n?", text)
    if not match:
        raise InputError(f"{sha}: not a sha256sum file (expected '<sha256>  {path.name}')")
    if match.group(2) != path.name:
        raise InputError(f"{sha}: names {match.group(2)!r}, not {path.name!r}")
    return match.group(1)

