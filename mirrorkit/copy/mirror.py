"""mirror: registry to registry through skopeo, for a host that sees both networks.

Same guarantees as a bundle: by digest where the plan has one, digests
preserved, images already present (same digest at the destination tag) skipped,
and every destination manifest fetched and hashed afterwards.
"""

from __future__ import annotations

import re
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mirrorkit import interrupt
from mirrorkit.copy.download import fetch_blob
from mirrorkit.copy.push import verify_registry
from mirrorkit.copy.skopeo import auth_file, cert_dirs, copy_argv, run_copy
from mirrorkit.destinations import destination_map
from mirrorkit.errors import AuthError, InputError, RegistryError
from mirrorkit.oci.client import RegistryClient
from mirrorkit.oci.credentials import CredentialStore
from mirrorkit.oci.layout import BlobStore
from mirrorkit.plan import Plan, PlanImage
from mirrorkit.refs import Ref, RegistryTarget


@dataclass
class MirrorReport:
    copied: int = 0
    skipped: int = 0
    verified: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    artifacts: int = 0  # signatures: artifact manifests pushed beside the images


def _network(client: RegistryClient, ref: Ref) -> tuple[str, bool]:
    base = client.base_url(ref.registry)
    return base.split("://", 1)[1], base.startswith("http://") or client.endpoints.is_insecure(ref.registry)


# skopeo's words when the destination fails on the blob it checks before copying
_BROKEN_LINK = re.compile(r"reuse blob (sha256:[0-9a-f]{64}) at destination: .*?: 5\d\d")


def repair_blob(client: RegistryClient, src: Ref, target: Ref, digest: str) -> None:
    """Upload one blob again, from the source through a temporary file.

    distribution killed while linking a blob into a repository leaves an empty link
    file: from then on it answers 500 for that blob there, to skopeo and to every
    node pulling the image, until the blob is uploaded into that repository again.
    """
    with tempfile.TemporaryDirectory(prefix="mirrorkit-repair-") as tmp:
        store = BlobStore(Path(tmp))
        fetch_blob(client, src, digest, client.blob_size(src, digest), store)
        client.upload_blob(target.registry, target.repository, digest, store.size(digest),
                           lambda: store.path(digest).open("rb"))


def mirror(plan: Plan, client: RegistryClient, credentials: CredentialStore, registry: RegistryTarget | None,
           mapping: str | None, jobs: int = 4, signatures: Any = None) -> MirrorReport:  # signatures: SignatureOptions
    if plan.platforms:
        raise InputError("mirror copies whole multi-arch images; for a platform-restricted plan use "
                         "pull-bundle and push-bundle")
    start = time.monotonic()
    dest = destination_map(plan, [(i.source, i.destination) for i in plan.images], registry, mapping)
    report = MirrorReport()
    hosts: dict[str, str] = {}
    for img in plan.images:
        for ref in (img.source_ref, dest[img.source]):
            hosts[_network(client, ref)[0]] = ref.registry

    def present(img: PlanImage) -> tuple[bool, str]:
        """(already at the destination, digest): what needs no copy at all."""
        interrupt.check()
        digest = img.digest or client.get_manifest(img.source_ref).digest
        return client.manifest_digest(dest[img.source]) == digest, digest

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        state = dict(zip((i.source for i in plan.images), pool.map(present, plan.images), strict=True))
    # -- preflight (issue 11): every repository about to receive images must take them, before a byte moves --
    from mirrorkit.copy.preflight import require_writable
    require_writable(client, [dest[i.source] for i in plan.images if not state[i.source][0]], jobs)
    # -- end preflight --

    def one(img: PlanImage, authfile: str | None, certs: dict[str, str]) -> tuple[bool, str]:
        interrupt.check()
        src, target = img.source_ref, dest[img.source]
        there, digest = state[img.source]
        if there:
            return False, digest
        src_host, src_insecure = _network(client, src)
        dst_host, dst_insecure = _network(client, target)
        argv = copy_argv(f"docker://{src_host}/{src.repository}@{digest}",
                         f"docker://{dst_host}/{target.repository}:{target.tag}" if target.tag
                         else f"docker://{dst_host}/{target.repository}",
                         src_insecure=src_insecure, dest_insecure=dst_insecure, authfile=authfile,
                         src_cert_dir=certs.get(src_host), dest_cert_dir=certs.get(dst_host))
        repaired: set[str] = set()
        while True:                          # one repair per broken blob; a blob that stays broken is reported
            try:
                run_copy(argv, f"mirroring {img.source}", secrets=credentials.secrets())
                return True, digest
            except RegistryError as exc:
                broken = _BROKEN_LINK.search(str(exc))
                if not broken or isinstance(exc, AuthError) or broken.group(1) in repaired:
                    raise
                repaired.add(broken.group(1))
                repair_blob(client, src, target, broken.group(1))

    # signatures: artifacts staged and, with keys, every signature checked at the source before any image is copied
    from mirrorkit.copy import artifacts
    opts = signatures or artifacts.SignatureOptions()
    scratch = tempfile.TemporaryDirectory(prefix="mirrorkit-artifacts-")
    try:
        staged = artifacts.stage_for_mirror(
            client, BlobStore(Path(scratch.name)),
            [(i.source, i.destination, i.source_ref, i.digest or client.get_manifest(i.source_ref).digest)
             for i in plan.images], opts, jobs) if opts.active else None
    except BaseException:
        scratch.cleanup()
        raise
    # signatures: end
    # skopeo verifies TLS with the client's CAs (--ca-cert, certs.d), per host
    with auth_file(credentials, hosts) as authfile, cert_dirs(client.endpoints, hosts) as certs, \
            ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(pool.map(lambda i: one(i, authfile, certs), plan.images))
    with scratch:  # signatures: artifacts pushed beside the images, byte for byte
        if staged is not None and staged.carried.artifacts:
            report.artifacts = staged.push(client, dest).manifests
    report.copied = sum(1 for copied, _ in results if copied)
    report.skipped = len(results) - report.copied
    expected = [(dest[img.source], digest, []) for img, (_, digest) in zip(plan.images, results, strict=True)]
    result = verify_registry(client, expected, jobs, blobs=True)
    report.verified = len(result.ok)
    report.problems = result.missing + result.different
    report.seconds = time.monotonic() - start
    return report
