"""Bundles: write, read back, split, and refuse hostile archives (no registry needed)."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import subprocess
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from kit.images import (
    OCI_INDEX,
    OCI_MANIFEST,
    canonical_json,
    make_image,
    make_index,
    make_layer,
    sha256_digest,
    unique_blobs,
)
from kit.tmpfs import free_bytes, small_tmpfs

from mirrorkit.bundle import guard, volumes
from mirrorkit.bundle.reader import BundleReader
from mirrorkit.bundle.writer import write_bundle
from mirrorkit.errors import DiskFullError, InputError, OperationError
from mirrorkit.lock import Lock, LockBlob, LockImage
from mirrorkit.plan import Plan

CREATED = "2024-05-01T12:00:00Z"
SPLIT = 40_000


@dataclass
class Layout:
    root: Path
    lock: Lock
    blobs: dict[str, bytes]
    layer: str  # a large layer digest
    manifests: list[str]


def make_lock(blobs: dict[str, bytes], images: list[LockImage], bundle_id: str = "bundle-a",
              sizes: dict[str, int] | None = None) -> Lock:
    sizes = sizes or {}
    return Lock(id=bundle_id, created=CREATED, generator="test", plan=Plan(images=[]), images=images,
                blobs=[LockBlob(d, sizes.get(d, len(b))) for d, b in blobs.items()])


def build_layout(root: Path, seed: str = "t", bundle_id: str = "bundle-a") -> Layout:
    """A 2-arch index and a single-platform image sharing one base layer, as skopeo leaves a work dir."""
    base = make_layer(f"{seed}/base", 30_000)
    amd = make_image(f"{seed}/multi/amd64", [base, make_layer(f"{seed}/amd", 20_000)], ("linux", "amd64"))
    arm = make_image(f"{seed}/multi/arm64", [base, make_layer(f"{seed}/arm", 20_000)], ("linux", "arm64"))
    index = make_index([amd, arm])
    single = make_image(f"{seed}/single", [base, make_layer(f"{seed}/single", 10_000)])
    blobs = {index.digest: index.data, amd.digest: amd.manifest, arm.digest: arm.manifest,
             single.digest: single.manifest}
    blobs.update({b.digest: b.data for b in unique_blobs([index, single]).values()})
    store = root / "blobs" / "sha256"
    store.mkdir(parents=True)
    for digest, data in blobs.items():
        (store / digest.removeprefix("sha256:")).write_bytes(data)
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (root / "index.json").write_bytes(canonical_json({"schemaVersion": 2, "manifests": [
        {"mediaType": OCI_INDEX, "digest": index.digest, "size": index.size},
        {"mediaType": OCI_MANIFEST, "digest": single.digest, "size": single.size}]}))
    images = [
        LockImage(source="example.com/team/multi:1.0", destination="registry.local/team/multi:1.0",
                  digest=index.digest, media_type=OCI_INDEX, platforms=["linux/amd64", "linux/arm64"],
                  manifests=[amd.digest, arm.digest], blobs=[b.digest for b in index.blobs()]),
        LockImage(source="example.com/team/single:2.0", destination="registry.local/team/single:2.0",
                  digest=single.digest, media_type=OCI_MANIFEST, platforms=["linux/amd64"],
                  blobs=[b.digest for b in single.blobs()]),
    ]
    return Layout(root, make_lock(blobs, images, bundle_id), blobs, base.digest,
                  [index.digest, amd.digest, arm.digest, single.digest])


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return build_layout(tmp_path / "work")


@pytest.fixture
def out(tmp_path: Path) -> Path:
    path = tmp_path / "bundles"
    path.mkdir()
    return path


def files_in(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def member_list(volume: Path) -> list[tarfile.TarInfo]:
    """A volume's members, plain or zstd-compressed."""
    import zstandard

    with open(volume, "rb") as f:
        src = zstandard.ZstdDecompressor().stream_reader(f) if volume.name.endswith(".zst") else f
        with tarfile.open(fileobj=src, mode="r|") as tar:
            return list(tar)


def read_all(reader: BundleReader) -> dict[str, bytes]:
    seen: dict[str, bytes] = {}
    for digest, size, stream in reader.iter_blobs():
        assert digest not in seen
        data = stream.read()
        assert len(data) == size
        seen[digest] = data
    return seen


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("compress", [None, "zstd"])
def test_round_trip(layout: Layout, out: Path, compress: str | None) -> None:
    name = "gpu.tar.zst" if compress else "gpu.tar"
    progress: list[int] = []
    volumes = write_bundle(layout.root, layout.lock, out / name, compress=compress, progress=progress.append)
    assert volumes == [out / name]
    assert files_in(out) == [name, name + ".sha256"]
    assert sum(progress) == sum(len(b) for b in layout.blobs.values())

    expected = hashlib.sha256(volumes[0].read_bytes()).hexdigest()
    assert (out / (name + ".sha256")).read_text() == f"{expected}  {name}\n"
    subprocess.run(["sha256sum", "-c", name + ".sha256"], cwd=out, check=True, capture_output=True)

    with BundleReader([volumes[0]]) as reader:
        assert reader.lock.id == "bundle-a"
        assert reader.lock.dumps() == layout.lock.dumps()
        assert reader.random_access is (compress is None)
        report = reader.verify()
        assert (report.blobs, report.bytes, report.volumes, report.complete) == (
            len(layout.blobs), sum(len(b) for b in layout.blobs.values()), 1, True)
        assert read_all(reader) == layout.blobs
        assert json.loads(reader.index_json)["schemaVersion"] == 2
        assert reader.read_small(layout.manifests[0]) == layout.blobs[layout.manifests[0]]
        if compress is None:
            with reader.open_blob(layout.layer) as a, reader.open_blob(layout.layer) as b:
                assert a.read(100) == b.read(100) == layout.blobs[layout.layer][:100]
                assert a.read() == layout.blobs[layout.layer][100:]
        else:
            with pytest.raises(OperationError, match="iter_blobs"):
                reader.open_blob(layout.layer)


def test_tar_entries_are_plain_and_ordered(layout: Layout, out: Path) -> None:
    [volume] = write_bundle(layout.root, layout.lock, out / "b.tar")
    with tarfile.open(volume) as tar:
        members = tar.getmembers()
        assert [m.name for m in members[:4]] == ["bundle.yaml", "volume.yaml", "oci-layout", "index.json"]
        assert all(m.isreg() and m.mode == 0o644 and m.uid == m.gid == 0 for m in members)
        assert {m.mtime for m in members} == {1714564800}
        # manifests are written first so a zstd reader finds them early
        assert [m.name[13:] for m in members[4:8]] == [d[7:] for d in layout.manifests]
        volume_yaml = yaml.safe_load(tar.extractfile("volume.yaml").read())  # type: ignore[union-attr]
    assert (volume_yaml["bundle"], volume_yaml["index"], volume_yaml["count"]) == ("bundle-a", 0, 1)
    assert {b["digest"]: b["size"] for b in volume_yaml["blobs"]} == {d: len(b) for d, b in layout.blobs.items()}


def test_differential_bundle_carries_only_lock_blobs(layout: Layout, out: Path) -> None:
    lock = layout.lock
    omitted = [b for b in lock.blobs if b.digest == layout.layer]
    lock.blobs = [b for b in lock.blobs if b.digest != layout.layer]
    lock.omitted = omitted
    [volume] = write_bundle(layout.root, lock, out / "diff.tar")
    reader = BundleReader([volume])
    assert reader.verify().blobs == len(layout.blobs) - 1
    assert layout.layer not in read_all(reader)


@pytest.mark.parametrize("compress", [None, "zstd"])
def test_split_volumes_stand_alone_and_together(layout: Layout, out: Path, compress: str | None) -> None:
    suffix = ".tar.zst" if compress else ".tar"
    volumes = write_bundle(layout.root, layout.lock, out / f"gpu{suffix}", split=SPLIT, compress=compress)
    assert len(volumes) >= 3
    assert [v.name for v in volumes] == [f"gpu.{i:03d}{suffix}" for i in range(len(volumes))]
    carried: list[str] = []
    for number, volume in enumerate(volumes):
        assert (out / (volume.name + ".sha256")).exists()
        reader = BundleReader([volume])
        report = reader.verify(require_complete=False)
        assert (report.volumes, report.volume_count, report.complete) == (1, len(volumes), False)
        carried += reader.blobs
        assert volume.stat().st_size <= SPLIT      # a hard limit, even with a blob bigger than the room in one
        others = [i + 1 for i in range(len(volumes)) if i != number]
        names = ", ".join(v.name for v in volumes if v != volume)
        with pytest.raises(InputError, match=re.escape(f"volumes {', '.join(map(str, others))} of {len(volumes)} "
                                                       f"missing ({names})")):
            reader.verify()
    assert layout.layer not in carried          # 30,000 bytes: more than a 40,000-byte volume has room for
    cut = {d for d in layout.blobs if any(p.name.startswith(f"parts/sha256/{d[7:]}.") for v in volumes
                                          for p in member_list(v))}
    assert layout.layer in cut and not cut & set(layout.manifests)     # manifests are never cut
    assert sorted(carried) == sorted(set(layout.blobs) - cut)  # the others each in exactly one volume
    assert layout.manifests[0] in BundleReader([volumes[0]]).blobs

    reader = BundleReader(list(reversed(volumes)))
    report = reader.verify()
    assert (report.volumes, report.blobs, report.complete) == (len(volumes), len(layout.blobs), True)
    assert read_all(reader) == layout.blobs


def test_a_split_with_no_room_beside_the_repeated_head_is_refused_and_writes_nothing(layout: Layout,
                                                                                      out: Path) -> None:
    with pytest.raises(InputError, match=r"^split size 1000 bytes is too small: every volume repeats the lock and "
                                         r"the layout files \(\d+ bytes\), so a volume needs at least \d+ bytes$"):
        write_bundle(layout.root, layout.lock, out / "gpu.tar", split=1000)
    assert files_in(out) == []


@pytest.mark.parametrize("compress", [None, "zstd"])
def test_a_blob_bigger_than_split_is_cut_across_volumes_and_read_back_whole(tmp_path: Path, out: Path,
                                                                             compress: str | None) -> None:
    big = build_layout(tmp_path / "big", seed="big")
    data = os.urandom(200_000)                      # five volumes' worth at 50,000 bytes a volume
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (big.root / "blobs" / "sha256" / digest[7:]).write_bytes(data)
    big.lock.blobs.append(LockBlob(digest, len(data)))
    big.blobs[digest] = data
    suffix = ".tar.zst" if compress else ".tar"
    volumes = write_bundle(big.root, big.lock, out / f"gpu{suffix}", split=50_000, compress=compress)
    assert len(volumes) >= 5
    holding = []
    for volume in volumes:
        assert volume.stat().st_size <= 50_000
        names = [m.name for m in member_list(volume)]
        if any(n.startswith(f"parts/sha256/{digest[7:]}.") for n in names):
            holding.append(volume)
        # each volume alone: its .sha256 and its structure check out
        subprocess.run(["sha256sum", "--quiet", "-c", f"{volume.name}.sha256"], cwd=out, check=True)
        assert BundleReader([volume]).verify(require_complete=False).complete is False
    assert len(holding) >= 4 and holding == volumes[volumes.index(holding[0]):][:len(holding)]   # consecutive
    with BundleReader(volumes) as reader:
        assert reader.blobs[digest] == len(data)
        report = reader.verify()
        assert (report.blobs, report.bytes) == (len(big.blobs), sum(len(b) for b in big.blobs.values()))
        assert read_all(reader) == big.blobs
        if compress is None:
            with reader.open_blob(digest) as stream:
                assert stream.read() == data
    # by hand: the parts in name order are the blob
    if compress is None:
        unpacked = tmp_path / "unpacked"
        for volume in volumes:
            with tarfile.open(volume) as tar:
                tar.extractall(unpacked, filter="data")
        joined = b"".join(p.read_bytes() for p in sorted((unpacked / "parts" / "sha256").glob(f"{digest[7:]}.*")))
        assert joined == data
    # one volume holding a part left out: named, not read past
    middle = holding[1]
    with pytest.raises(InputError, match=f"volume {volumes.index(middle) + 1} of {len(volumes)} missing"):
        BundleReader([v for v in volumes if v != middle]).verify()
    with BundleReader([v for v in volumes if v != middle]) as reader, \
            pytest.raises(InputError, match=f"blob {digest} goes on in part 1, in a volume that was not given"):
        read_all(reader)


def test_a_corrupt_part_fails_the_whole_blob(tmp_path: Path, out: Path) -> None:
    big = build_layout(tmp_path / "big", seed="big")
    data = os.urandom(120_000)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (big.root / "blobs" / "sha256" / digest[7:]).write_bytes(data)
    big.lock.blobs.append(LockBlob(digest, len(data)))
    volumes = write_bundle(big.root, big.lock, out / "gpu.tar", split=50_000)
    name = f"parts/sha256/{digest[7:]}.001"
    victim = next(v for v in volumes if any(m.name == name for m in member_list(v)))
    member = next(m for m in member_list(victim) if m.name == name)
    with open(victim, "r+b") as f:                 # flip a byte of part 1, and hide it from the .sha256
        f.seek(member.offset_data + 10)
        byte = f.read(1)
        f.seek(member.offset_data + 10)
        f.write(bytes([byte[0] ^ 1]))
    (out / f"{victim.name}.sha256").write_text(f"{hashlib.sha256(victim.read_bytes()).hexdigest()}  {victim.name}\n")
    with pytest.raises(InputError, match=f"blob {digest} \\(split across volumes\\) is corrupt"):
        BundleReader(volumes).verify()
    with BundleReader(volumes) as reader, pytest.raises(InputError, match=f"blob {digest} is corrupt"), \
            reader.open_blob(digest) as stream:
        stream.read()


def test_missing_volume_is_named(layout: Layout, out: Path) -> None:
    volumes = write_bundle(layout.root, layout.lock, out / "gpu.tar", split=SPLIT)
    reader = BundleReader([volumes[0], *volumes[2:]])
    with pytest.raises(InputError, match=f"^bundle bundle-a: volume 2 of {len(volumes)} missing"):
        reader.verify()
    assert reader.verify(require_complete=False).blobs < len(layout.blobs)


def test_volumes_from_another_bundle_are_refused(tmp_path: Path, layout: Layout, out: Path) -> None:
    other = build_layout(tmp_path / "other", seed="other", bundle_id="bundle-b")
    ours = write_bundle(layout.root, layout.lock, out / "a.tar", split=SPLIT)
    theirs = write_bundle(other.root, other.lock, out / "b.tar", split=SPLIT)
    with pytest.raises(InputError, match="volumes from two different bundles: .* has id bundle-a, .* has id bundle-b"):
        BundleReader([ours[0], theirs[1]])
    with pytest.raises(InputError, match="given twice"):
        BundleReader([ours[0], ours[0]])


def test_directory_form(layout: Layout, out: Path, tmp_path: Path) -> None:
    volumes = write_bundle(layout.root, layout.lock, out / "gpu.tar", split=SPLIT)
    unpacked = tmp_path / "unpacked"
    for volume in volumes:
        with tarfile.open(volume) as tar:
            tar.extractall(unpacked, filter="data")
    reader = BundleReader([unpacked])
    assert reader.random_access
    assert reader.verify().blobs == len(layout.blobs)
    assert read_all(reader) == layout.blobs
    with reader.open_blob(layout.layer) as stream:
        assert stream.read() == layout.blobs[layout.layer]


def test_plain_volume_is_the_tar_tarfile_writes(layout: Layout, out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plain volume is written by the kernel (copy_file_range, else sendfile, else reads and writes) with
    headers made here: byte for byte what tarfile writes (the zstd volume, decompressed), by every way."""
    import zstandard

    from mirrorkit.bundle import plain as writer

    [packed] = write_bundle(layout.root, layout.lock, out / "ref.tar.zst", compress="zstd")
    expected = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(packed.read_bytes())).read()
    [plain] = write_bundle(layout.root, layout.lock, out / "a.tar")
    assert plain.read_bytes() == expected

    def no_copy_file_range(src: int, dst: int, count: int, offset: int) -> int:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    def no_sendfile(out_fd: int, in_fd: int, offset: int, count: int) -> int:
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(writer.os, "copy_file_range", no_copy_file_range)
    [by_sendfile] = write_bundle(layout.root, layout.lock, out / "b.tar")
    assert by_sendfile.read_bytes() == expected
    monkeypatch.setattr(writer.os, "sendfile", no_sendfile)
    progress: list[int] = []
    [by_reads] = write_bundle(layout.root, layout.lock, out / "c.tar", progress=progress.append)
    assert by_reads.read_bytes() == expected
    assert sum(progress) == sum(len(b) for b in layout.blobs.values())
    for name in ("a.tar", "b.tar", "c.tar"):
        subprocess.run(["sha256sum", "-c", name + ".sha256"], cwd=out, check=True, capture_output=True)


def test_trusted_blobs_are_not_hashed_again_the_others_are(layout: Layout, out: Path) -> None:
    """A pull vouches for the blobs it fetched (hashed as they arrived) in this run; anything else in the
    work folder is hashed again while it is written."""
    path = layout.root / "blobs" / "sha256" / layout.layer[7:]
    path.write_bytes(bytes(len(layout.blobs[layout.layer])))
    others = [d for d in layout.blobs if d != layout.layer]
    for compress, name in ((None, "gpu.tar"), ("zstd", "gpu.tar.zst")):
        with pytest.raises(OperationError, match=f"blob {layout.layer} in the work directory is corrupt"):
            write_bundle(layout.root, layout.lock, out / name, compress=compress, trusted=others)
        assert files_in(out) == []
    write_bundle(layout.root, layout.lock, out / "gpu.tar", trusted=[layout.layer])
    assert files_in(out) == ["gpu.tar", "gpu.tar.sha256"]


# --------------------------------------------------------------------------- writing fails cleanly


def test_write_refuses_layout_missing_a_lock_blob(layout: Layout, out: Path) -> None:
    (layout.root / "blobs" / "sha256" / layout.layer[7:]).unlink()
    with pytest.raises(OperationError, match=f"blob {layout.layer} is missing from the work directory"):
        write_bundle(layout.root, layout.lock, out / "gpu.tar")
    assert files_in(out) == []


def test_write_refuses_blob_of_wrong_size_or_content(layout: Layout, out: Path) -> None:
    path = layout.root / "blobs" / "sha256" / layout.layer[7:]
    path.write_bytes(layout.blobs[layout.layer] + b"x")
    with pytest.raises(OperationError, match=f"blob {layout.layer} .* but the lock says"):
        write_bundle(layout.root, layout.lock, out / "gpu.tar")
    path.write_bytes(bytes(len(layout.blobs[layout.layer])))
    with pytest.raises(OperationError, match=f"blob {layout.layer} in the work directory is corrupt"):
        write_bundle(layout.root, layout.lock, out / "gpu.tar")
    assert files_in(out) == []


def test_blob_vanishing_midway_leaves_nothing(layout: Layout, out: Path) -> None:
    volumes = write_bundle(layout.root, layout.lock, out / "probe.tar", split=SPLIT)
    last = [d for v in volumes for d in BundleReader([v]).blobs][-1]   # the last blob written whole
    for path in out.iterdir():
        path.unlink()

    def vanish(_: int) -> None:
        (layout.root / "blobs" / "sha256" / last[7:]).unlink(missing_ok=True)

    with pytest.raises(OperationError, match=f"blob {last} cannot be read"):
        write_bundle(layout.root, layout.lock, out / "gpu.tar", split=SPLIT, progress=vanish)
    assert files_in(out) == []


def test_disk_full_gives_one_line_leaves_no_partial_and_keeps_older_bundle(layout: Layout, tmp_path: Path) -> None:
    """A real full disk (a small tmpfs): the older bundle stays intact, the partial goes, the disk is not
    left full, and the one line names the work folder a rerun resumes from."""
    with small_tmpfs(tmp_path / "disk", "200k") as disk:
        [old] = write_bundle(layout.root, layout.lock, disk / "gpu.tar")
        before, free = old.read_bytes(), free_bytes(disk)
        assert free < len(before)                      # the next whole bundle cannot fit beside it
        with pytest.raises(DiskFullError) as exc:
            write_bundle(layout.root, layout.lock, disk / "new.tar")
        message = str(exc.value)
        assert "\n" not in message
        assert re.fullmatch(rf"no space left on device while writing the bundle {disk}/new.tar \(about .* more "
                            rf"were needed\); removed the partial {disk}/.new.tar.partial; the work folder "
                            rf"{layout.root} \(\d+\.\d kB so far\) is kept: free some space and run the same "
                            "command again, it resumes from there", message), message
        assert files_in(disk) == ["gpu.tar", "gpu.tar.sha256"]
        assert old.read_bytes() == before
        assert free_bytes(disk) == free
        with pytest.raises(DiskFullError, match="no space left on device while writing the bundle"):
            write_bundle(layout.root, layout.lock, disk / "split.tar", split=SPLIT)
        assert files_in(disk) == ["gpu.tar", "gpu.tar.sha256"]
        assert free_bytes(disk) == free


# --------------------------------------------------------------------------- hostile bundles


def tar_info(name: str, size: int = 0, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.linkname, info.mode = size, kind, linkname, 0o644
    return info


def hostile_tar(path: Path, lock: Lock, blobs: dict[str, bytes], *, listed: dict[str, int] | None = None,
                extra: Sequence[tuple[tarfile.TarInfo, bytes]] = ()) -> Path:
    """A volume built by hand: the writer's head, then ``blobs``, then ``extra`` entries."""
    if listed is None:
        listed = {d: len(b) for d, b in blobs.items()}
    volume = {"apiVersion": "mirrorkit.dev/v1alpha1", "kind": "BundleVolume", "bundle": lock.id, "index": 0,
              "count": 1, "blobs": [{"digest": d, "size": s} for d, s in listed.items()]}
    head = [("bundle.yaml", lock.dumps().encode()), ("volume.yaml", yaml.safe_dump(volume).encode()),
            ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", b'{"schemaVersion":2}')]
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in head + [(f"blobs/sha256/{d[7:]}", b) for d, b in blobs.items()]:
            tar.addfile(tar_info(name, len(data)), io.BytesIO(data))
        for info, data in extra:
            info.size = len(data) if info.type in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0
            tar.addfile(info, io.BytesIO(data) if info.size else None)
    return path


def open_and_verify(*paths: Path) -> None:
    BundleReader(list(paths)).verify()


HEX = "ab" * 32

ENTRY_CASES = {
    "parent": ([tar_info("../x")], "'../x': parent directory reference"),
    "nested-parent": ([tar_info("blobs/../../x")], "parent directory reference"),
    "absolute": ([tar_info("/abs")], "'/abs': absolute path"),
    "backslash": ([tar_info("blobs\\..\\x")], "backslash in entry name"),
    "symlink": ([tar_info(f"blobs/sha256/{HEX}", kind=tarfile.SYMTYPE, linkname="/etc/passwd")], "is a symlink"),
    "hardlink-out": ([tar_info(f"blobs/sha256/{HEX}", kind=tarfile.LNKTYPE, linkname="../../etc/passwd")],
                     "is a hard link"),
    "hardlink-chain": ([tar_info("blobs/sha256/" + "cd" * 32, kind=tarfile.LNKTYPE, linkname="index.json"),
                        tar_info(f"blobs/sha256/{HEX}", kind=tarfile.LNKTYPE, linkname="blobs/sha256/" + "cd" * 32)],
                       "is a hard link"),
    "char-device": ([tar_info(f"blobs/sha256/{HEX}", kind=tarfile.CHRTYPE)], "is a character device"),
    "block-device": ([tar_info(f"blobs/sha256/{HEX}", kind=tarfile.BLKTYPE)], "is a block device"),
    "fifo": ([tar_info(f"blobs/sha256/{HEX}", kind=tarfile.FIFOTYPE)], "is a fifo"),
    "directory": ([tar_info("etc", kind=tarfile.DIRTYPE)], "is a directory"),
    "not-hex": ([tar_info("blobs/sha256/xyz")], "'blobs/sha256/xyz': blob name is not 64 lowercase hex"),
    "upper-hex": ([tar_info("blobs/sha256/" + "AB" * 32)], "not 64 lowercase hex"),
    "stray-file": ([tar_info("run.sh")], "'run.sh': unexpected entry"),
    "not-in-lock": ([tar_info(f"blobs/sha256/{HEX}")], f"blob sha256:{HEX} is not one the lock carries"),
    "duplicate-meta": ([tar_info("index.json")], "'index.json': duplicate entry"),
}


@pytest.mark.parametrize("case", list(ENTRY_CASES))
def test_hostile_entries_are_refused(case: str, layout: Layout, tmp_path: Path) -> None:
    infos, message = ENTRY_CASES[case]
    volume = hostile_tar(tmp_path / "evil.tar", layout.lock, layout.blobs,
                         extra=[(info, b"pwned\n") for info in infos])
    before = sorted(tmp_path.parent.rglob("*"))
    with pytest.raises(InputError) as exc:
        open_and_verify(volume)
    text = str(exc.value)
    assert message in text and str(volume) in text and "\n" not in text
    assert sorted(tmp_path.parent.rglob("*")) == before
    assert not (tmp_path.parent / "x").exists() and not (tmp_path / "x").exists()


def test_duplicate_blob_entry(layout: Layout, tmp_path: Path) -> None:
    data = layout.blobs[layout.layer]
    volume = hostile_tar(tmp_path / "evil.tar", layout.lock, layout.blobs,
                         extra=[(tar_info(f"blobs/sha256/{layout.layer[7:]}"), data)])
    with pytest.raises(InputError, match=f"entry 'blobs/sha256/{layout.layer[7:]}': duplicate entry"):
        open_and_verify(volume)


def test_meta_out_of_order_or_missing(layout: Layout, tmp_path: Path) -> None:
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as tar:
        tar.addfile(tar_info("oci-layout", 2), io.BytesIO(b"{}"))
    with pytest.raises(InputError, match="'oci-layout': entry 1 must be bundle.yaml"):
        open_and_verify(path)
    lock = layout.lock.dumps().encode()
    with tarfile.open(path, "w") as tar:
        tar.addfile(tar_info("bundle.yaml", len(lock)), io.BytesIO(lock))
    with pytest.raises(InputError, match="not a mirrorkit bundle volume: volume.yaml is missing"):
        open_and_verify(path)
    path.write_bytes(b"PK\x03\x04 a zip file" + bytes(600))
    with pytest.raises(InputError, match="not a bundle volume"):
        open_and_verify(path)


def test_oversized_meta_is_refused_before_reading(layout: Layout, out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    [volume] = write_bundle(layout.root, layout.lock, out / "gpu.tar")
    monkeypatch.setitem(volumes.META_CAPS, "index.json", 10)
    with pytest.raises(InputError, match="'index.json': .* larger than the 10 allowed"):
        open_and_verify(volume)


def test_huge_extended_header_is_refused(layout: Layout, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guard, "HEADER_CAP", 4096)
    info = tar_info("blobs/sha256/" + HEX)
    info.pax_headers = {"comment": "x" * 10_000}
    volume = hostile_tar(tmp_path / "evil.tar", layout.lock, layout.blobs, extra=[(info, b"")])
    with pytest.raises(InputError, match="extended header of .* bytes"):
        open_and_verify(volume)


def test_blob_whose_bytes_do_not_match_its_name(layout: Layout, tmp_path: Path) -> None:
    blobs = dict(layout.blobs)
    blobs[layout.layer] = bytes(len(blobs[layout.layer]))
    volume = hostile_tar(tmp_path / "evil.tar", layout.lock, blobs)
    reader = BundleReader([volume])
    with pytest.raises(InputError, match=f"blob {layout.layer} is corrupt: its bytes hash to sha256:"):
        reader.verify()
    # streaming consumers never get the final bytes of a tampered blob
    handed_out = 0
    with pytest.raises(InputError, match="is corrupt"):
        for digest, _, stream in reader.iter_blobs():
            while chunk := stream.read(8192):
                if digest == layout.layer:
                    handed_out += len(chunk)
    assert handed_out < len(blobs[layout.layer])
    with pytest.raises(InputError, match="is corrupt"), reader.open_blob(layout.layer) as stream:
        stream.read()


def test_lock_declaring_larger_size_than_content(layout: Layout, tmp_path: Path) -> None:
    lock = make_lock(layout.blobs, layout.lock.images, sizes={layout.layer: 10**9})
    listed = {d: len(b) for d, b in layout.blobs.items()} | {layout.layer: 10**9}
    volume = hostile_tar(tmp_path / "evil.tar", lock, layout.blobs, listed=listed)
    with pytest.raises(InputError, match=f"blob {layout.layer} has {len(layout.blobs[layout.layer])} bytes but the "
                                         "lock says 1000000000"):
        open_and_verify(volume)


@pytest.mark.parametrize("compress", [None, "zstd"])
def test_truncated_volume(layout: Layout, out: Path, compress: str | None) -> None:
    [volume] = write_bundle(layout.root, layout.lock, out / "gpu.tar", compress=compress)
    data = volume.read_bytes()
    volume.write_bytes(data[: len(data) // 2])
    (out / "gpu.tar.sha256").unlink()
    with pytest.raises(InputError, match=f"^{volume}: .*truncated") as exc:
        open_and_verify(volume)
    assert "\n" not in str(exc.value)


def test_volume_cut_at_a_member_boundary(layout: Layout, out: Path) -> None:
    """tarfile takes a missing end-of-archive marker for a normal end; the reader must not."""
    [volume] = write_bundle(layout.root, layout.lock, out / "gpu.tar")
    (out / "gpu.tar.sha256").unlink()
    with tarfile.open(volume) as tar:
        members = tar.getmembers()
    data = volume.read_bytes()
    last = members[-1]
    volume.write_bytes(data[: last.offset_data + (last.size + 511) // 512 * 512])
    with pytest.raises(InputError, match="truncated volume: the archive stops at byte .* without its end marker"):
        open_and_verify(volume)
    volume.write_bytes(data[: members[-2].offset])  # the last blob is gone entirely
    with pytest.raises(InputError, match="truncated"):
        open_and_verify(volume)
    volume.write_bytes(data[: last.offset] + b"\x01" * 512 + bytes(10240))
    with pytest.raises(InputError, match="corrupt tar header at byte"):
        open_and_verify(volume)


def test_lock_naming_a_blob_the_archive_lacks(layout: Layout, tmp_path: Path) -> None:
    blobs = {d: b for d, b in layout.blobs.items() if d != layout.layer}
    volume = hostile_tar(tmp_path / "evil.tar", layout.lock, blobs)
    reader = BundleReader([volume])
    with pytest.raises(InputError, match=f"blob {layout.layer} named in the lock is not in the bundle"):
        reader.verify()
    assert reader.verify(require_complete=False).blobs == len(blobs)
    # volume.yaml promising a blob the tar lacks means a truncated volume
    listed = {d: len(b) for d, b in layout.blobs.items()}
    volume = hostile_tar(tmp_path / "short.tar", layout.lock, blobs, listed=listed)
    with pytest.raises(InputError, match=f"truncated or incomplete: blob {layout.layer} listed in volume.yaml"):
        BundleReader([volume])


def test_manifest_declaring_layers_and_manifests(tmp_path: Path) -> None:
    bad = canonical_json({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [], "manifests": []})
    digest = sha256_digest(bad)
    lock = make_lock({digest: bad}, [LockImage(source="example.com/x:1", destination=None, digest=digest,
                                               media_type=OCI_MANIFEST)])
    volume = hostile_tar(tmp_path / "evil.tar", lock, {digest: bad})
    with pytest.raises(InputError, match=f"^manifest {digest} of example.com/x:1: declares both 'layers' and"):
        open_and_verify(volume)


def test_manifest_references_must_be_in_lock(layout: Layout, tmp_path: Path) -> None:
    stranger = make_layer("stranger", 100)
    image = make_image("stranger", [stranger])
    blobs = {image.digest: image.manifest, image.config.digest: image.config.data}
    lock = make_lock(blobs, [LockImage(source="example.com/x:1", destination=None, digest=image.digest,
                                       media_type=OCI_MANIFEST, blobs=[image.config.digest])])
    volume = hostile_tar(tmp_path / "evil.tar", lock, blobs)
    with pytest.raises(InputError, match=f"references blob {stranger.digest}, which the lock neither carries"):
        open_and_verify(volume)
    index = make_index([image])
    blobs = {index.digest: index.data}
    lock = make_lock(blobs, [LockImage(source="example.com/x:1", destination=None, digest=index.digest,
                                       media_type=OCI_INDEX)])
    volume = hostile_tar(tmp_path / "evil2.tar", lock, blobs)
    with pytest.raises(InputError, match=f"lists child manifest {image.digest}, which the lock does not name"):
        open_and_verify(volume)


def test_tampered_sha256_file(layout: Layout, out: Path) -> None:
    [volume] = write_bundle(layout.root, layout.lock, out / "gpu.tar")
    sha = out / "gpu.tar.sha256"
    sha.write_text(f"{'0' * 64}  gpu.tar\n")
    with pytest.raises(InputError, match=rf"{volume}: content does not match gpu\.tar\.sha256"):
        open_and_verify(volume)
    sha.write_text(f"{'0' * 64}  other.tar\n")
    with pytest.raises(InputError, match="names 'other.tar', not 'gpu.tar'"):
        open_and_verify(volume)


def test_trailing_data_after_archive(layout: Layout, out: Path) -> None:
    [volume] = write_bundle(layout.root, layout.lock, out / "gpu.tar")
    (out / "gpu.tar.sha256").unlink()
    with volume.open("ab") as f:
        f.write(b"hidden second archive")
    with pytest.raises(InputError, match="data after the end of the archive"):
        open_and_verify(volume)


@pytest.mark.parametrize("where", ["blob", "top", "dir"])
def test_directory_bundle_with_symlink(layout: Layout, out: Path, tmp_path: Path, where: str) -> None:
    [volume] = write_bundle(layout.root, layout.lock, out / "gpu.tar")
    unpacked = tmp_path / "unpacked"
    with tarfile.open(volume) as tar:
        tar.extractall(unpacked, filter="data")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(layout.blobs[layout.layer])
    if where == "blob":
        target = unpacked / "blobs" / "sha256" / layout.layer[7:]
        target.unlink()
        os.symlink(outside / "secret", target)
    elif where == "top":
        (unpacked / "index.json").unlink()
        os.symlink(outside / "secret", unpacked / "index.json")
    else:
        os.rename(unpacked / "blobs" / "sha256", outside / "sha256")
        os.symlink(outside / "sha256", unpacked / "blobs" / "sha256")
    with pytest.raises(InputError, match="is a symlink; only regular files are allowed") as exc:
        open_and_verify(unpacked)
    assert "\n" not in str(exc.value)


def test_directory_bundle_with_stray_file(layout: Layout, out: Path, tmp_path: Path) -> None:
    [volume] = write_bundle(layout.root, layout.lock, out / "gpu.tar")
    unpacked = tmp_path / "unpacked"
    with tarfile.open(volume) as tar:
        tar.extractall(unpacked, filter="data")
    (unpacked / "blobs" / "sha256" / "notes.txt").write_text("hi")
    with pytest.raises(InputError, match="'blobs/sha256/notes.txt': blob name is not 64 lowercase hex"):
        open_and_verify(unpacked)


def test_a_split_set_with_some_checksums_missing_is_refused_in_one_line(layout: Layout, out: Path) -> None:
    volumes = write_bundle(layout.root, layout.lock, out / "gpu.tar", split=SPLIT)
    assert len(volumes) > 2
    (out / f"{volumes[1].name}.sha256").unlink()     # as a kill between the checksum renames leaves it
    with pytest.raises(InputError) as exc:
        BundleReader(volumes)
    assert str(exc.value) == (f"{volumes[1]}: incomplete set: its .sha256 is missing while {volumes[0].name} has one "
                              "(a write or copy was interrupted); write or copy the bundle again")


def test_a_smaller_split_set_replaces_an_older_one_whole(layout: Layout, out: Path, tmp_path: Path) -> None:
    older = build_layout(tmp_path / "old", seed="old", bundle_id="bundle-old")
    old = write_bundle(older.root, older.lock, out / "gpu.tar", split=SPLIT)
    new = write_bundle(layout.root, layout.lock, out / "gpu.tar", split=2 * SPLIT)
    assert len(old) > len(new)
    assert files_in(out) == sorted([v.name for v in new] + [f"{v.name}.sha256" for v in new])
    with BundleReader(sorted(out.glob("gpu.*.tar"))) as reader:
        assert reader.lock.id == "bundle-a" and read_all(reader) == layout.blobs
