"""Driver packages for pull-bundle (--package-source): resolved against the driver images just
fetched, then carried into the work folder's blob store and the lock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mirrorkit.errors import InputError, OperationError
from mirrorkit.lock import Lock, LockBlob
from mirrorkit.oci.layout import BlobStore
from mirrorkit.oci.transport import Endpoints
from mirrorkit.plan import Plan
from mirrorkit.transfer.engine import Graph

if TYPE_CHECKING:
    from mirrorkit.transfer.pull import PullOptions, PullReport


def carry_packages(plan: Plan, opts: PullOptions, endpoints: Endpoints, store: BlobStore,
                   graphs: list[Graph]) -> Any:
    """The packages of every runtime-compiled node's driver (plan ``packages:``), through --package-source."""
    from mirrorkit.oci.httpfile import HttpFiles
    from mirrorkit.packages.carry import carry, missing_message, parse_package_source
    from mirrorkit.packages.needs import needs_from_plan

    sources = [parse_package_source(text) for text in opts.package_sources]
    needs = needs_from_plan(plan.packages, "plan")
    if not needs:
        raise InputError("--package-source: the plan lists no driver packages (no runtime-compiled node "
                         "with a kernel; plan again without --no-driver-packages)")
    manifests = {img.source: store.read(g.digest) for img, g in zip(plan.images, graphs, strict=True)
                 if not g.error and store.has(g.digest)}
    with HttpFiles(endpoints) as files:
        carried = carry(needs, sources, manifests, lambda d: store.path(d).open("rb"), files,
                        store.root / "packages", opts.allow_unsigned_repo)
    if carried.missing:
        raise OperationError(missing_message(carried.missing))
    return carried


def add_packages(carried: Any, store: BlobStore, lock: Lock, report: PullReport) -> None:
    """Package files join the blob store (under their sha256) and the lock (blobs and package_repos)."""
    from mirrorkit.lockpackages import LockPackageFile, LockPackageRepo

    have = {b.digest for b in lock.blobs}
    for hexdigest, path in carried.files.items():
        digest = f"sha256:{hexdigest}"
        if not store.has(digest):
            store.adopt(path, digest)          # hashed again on the way in: the store takes nothing else
        if digest not in have:
            size = store.size(digest)
            lock.blobs.append(LockBlob(digest, size))
            have.add(digest)
            report.unique_bytes += size
            report.total_bytes += size
            report.package_bytes += size
    lock.blobs.sort(key=lambda b: b.digest)
    lock.package_repos = [LockPackageRepo(os=r.os, name=r.name, family=r.family, source=r.source,
                                          repo_file=r.repo_file, repo_text=r.repo_text, signed_by=r.signed_by,
                                          files=[LockPackageFile(f.path, f.sha256, f.size, f.kind) for f in r.files])
                          for r in carried.repos]
    report.package_repos = len(lock.package_repos)
    report.package_files = sum(len(r.files) for r in lock.package_repos)
    for need in carried.uncovered:
        report.package_warnings.append(f"{need.os_tag} kernel {need.kernel}: no --package-source matches "
                                       f"{need.os_tag}; its driver will need a package repository")
