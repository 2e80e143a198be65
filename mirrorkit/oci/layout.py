"""A content-addressed blob store laid out as an OCI image layout.

The connected side gathers every image into one store (``blobs/sha256/<hex>``)
so each blob is kept once however many images share it; the bundle writer
then streams the store into the bundle. Files enter the store only after their
bytes hash to their name, and by rename, so an interrupted run never leaves a
partial blob under a real digest — which is what makes re-running a pull safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

from mirrorkit.errors import OperationError
from mirrorkit.refs import check_digest

CHUNK = 1 << 20
OCI_LAYOUT = {"imageLayoutVersion": "1.0.0"}


def hash_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return "sha256:" + h.hexdigest(), size


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs" / "sha256"
        self.blobs.mkdir(parents=True, exist_ok=True)
        (root / "oci-layout").write_text(json.dumps(OCI_LAYOUT))
        self.tmp = root / "tmp"
        self.tmp.mkdir(exist_ok=True)

    def path(self, digest: str) -> Path:
        return self.blobs / check_digest(digest).split(":", 1)[1]

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        return self.path(digest).stat().st_size

    def read(self, digest: str) -> bytes:
        return self.path(digest).read_bytes()

    def add_bytes(self, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if not self.has(digest):
            # per thread: two images may hold the same manifest, written at the same moment
            tmp = self.tmp / f"{digest[7:]}.{os.getpid()}.{threading.get_ident()}.part"
            tmp.write_bytes(data)
            tmp.replace(self.path(digest))
        return digest

    def partial_path(self, digest: str) -> Path:
        """Where a download of ``digest`` grows until it is whole (kept across runs, for Range resumes)."""
        folder = self.root / "partial"
        folder.mkdir(exist_ok=True)
        return folder / f"{check_digest(digest).split(':', 1)[1]}.partial"

    def adopt(self, path: Path, digest: str, hashed: str | None = None) -> bool:
        """Move a downloaded file into the store if its bytes match ``digest``; True if it was new.

        ``hashed``: the digest the caller computed while the bytes streamed in, so a
        large file is not read a second time.
        """
        if self.has(digest):
            path.unlink(missing_ok=True)
            return False
        actual = hashed or hash_file(path)[0]
        if actual != digest:
            path.unlink(missing_ok=True)
            raise OperationError(f"downloaded blob {digest} hashes to {actual}: refusing it")
        path.replace(self.path(digest))
        return True

    def write_index(self, manifests: list[dict[str, Any]]) -> None:
        index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                 "manifests": manifests}
        tmp = self.root / "index.json.part"
        tmp.write_text(json.dumps(index, indent=2))
        tmp.replace(self.root / "index.json")
