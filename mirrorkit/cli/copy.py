"""pull-bundle, push-bundle, mirror, verify, inventory: the commands that move or check bytes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from mirrorkit.cli.common import (
    bundle_key_option,
    check_bundle_keys,
    credentials_from,
    destination_options,
    endpoints_from,
    registry_options,
    retry_from,
    target_from,
    warn_unused_endpoints,
)
from mirrorkit.errors import InputError, MirrorkitError, OperationError
from mirrorkit.mapping import STRATEGIES

MIN_SPLIT = 64 << 10
JOBS = click.option("--jobs", "-j", type=click.IntRange(1, 64), default=4, show_default=True,
                    help="Images (or blobs) in flight at once.")
FORMAT = click.option("--format", "fmt", type=click.Choice(("text", "json")), default="text", show_default=True,
                      help="Report form; json is stable for scripts.")


# signature options, shared by every command that moves or checks images: signatures travel with the
# images by default, and --verify-key makes a missing or bad one stop the command before anything is written
def signature_options(f: Any) -> Any:
    f = click.option("--no-signatures", is_flag=True,
                     help="Leave out cosign signatures, attestations, SBOMs and referrers (carried by default).")(f)
    return click.option("--verify-key", "verify_keys", multiple=True, metavar="KEY.pub", type=click.Path(dir_okay=False),
                        help="PEM public key (ECDSA P-256/P-384, RSA, Ed25519): every image must carry a valid "
                             "cosign signature under one of these keys, or nothing is written (repeatable).")(f)


def _signatures(p: dict[str, Any]) -> Any:
    from mirrorkit.transfer.artifacts import SignatureOptions
    from mirrorkit.trust.keys import load_keys

    return SignatureOptions(carry=not p.pop("no_signatures", False), keys=load_keys(p.pop("verify_keys", ())))


def _signature_lines(verifications: list[Any]) -> list[str]:
    keys = sorted({v.key_fingerprint for v in verifications})
    return [f"  signatures verified for {_n(len(verifications), 'digest')} under {', '.join(keys)}"] if keys else []


def _n(count: int, noun: str) -> str:
    if count == 1:
        return f"1 {noun}"
    if noun.endswith("y") and noun[-2:-1] not in "aeiou":    # "package repository" -> "repositories"
        return f"{count} {noun[:-1]}ies"
    return f"{count} {noun}s"


def _emit(fmt: str, data: dict[str, Any], text: str) -> None:
    if fmt == "json":
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(text, err=True)


@click.command("pull-bundle", epilog="""
\b
Examples:
  mirrorkit pull-bundle plan.yaml -o bundles/gpu-operator-v23.9.2.tar
  mirrorkit pull-bundle plan.yaml -o bundles/gpu.tar --split 4GiB        # USB-sized volumes
  mirrorkit pull-bundle plan.yaml -o /media/usb/gpu.tar --work-dir /var/tmp   # work folder on another disk
  mirrorkit pull-bundle plan.yaml -o bundles/gpu-next.tar --since bundles/gpu.lock.yaml
  mirrorkit pull-bundle plan.yaml -o bundles/gpu-next.tar --have inventory.json
  mirrorkit pull-bundle plan.yaml -o bundles/gpu.tar --keep-going     # fetch all it can, list what failed
  mirrorkit pull-bundle plan.yaml -o bundles/gpu.tar --sign-key site-bundle.pem   # sign the lock
  mirrorkit pull-bundle plan.yaml -o bundles/gpu.tar --chart oci://nvcr.io/nvidia/cloud-native-charts/gpu-operator:v24.9.0 --verify-key nvidia.pub
  mirrorkit pull-bundle plan.yaml -o bundles/gpu.tar --installer mirrorkit-installer/   # mirrorkit too
  mirrorkit pull-bundle plan.yaml -o bundles/gpu.tar --chart https://helm.ngc.nvidia.com/nvidia/gpu-operator:v24.9.0
""")
@click.argument("plan", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Bundle file (default: bundles/PLAN.tar).")
@JOBS
@click.option("--split", metavar="SIZE", help="Write volumes of at most SIZE (e.g. 4GiB), each checkable alone.")
@click.option("--compress", type=click.Choice(("none", "zstd")), default="none", show_default=True,
              help="Layers are compressed already; zstd helps only for uncompressed layers.")
@click.option("--since", type=click.Path(exists=False), help="Leave out blobs an earlier bundle (or its lock) carried.")
@click.option("--have", type=click.Path(dir_okay=False), help="Leave out blobs the registry already has (mirrorkit inventory).")
@click.option("--keep-work", is_flag=True, help="Keep the work folder (the fetched blobs) after writing.")
@click.option("--work-dir", type=click.Path(file_okay=False), metavar="DIR",
              help="Put the work folder (the fetched blobs) in DIR instead of beside the bundle, e.g. on "
                   "another filesystem: the bundle's filesystem then needs room for the bundle only.")
@click.option("--keep-going", is_flag=True,
              help="Copy every image that can be copied, then list every failure (exit 1, no bundle written; "
                   "a rerun fetches only what is missing).")
@click.option("--chart", "charts", multiple=True, metavar="FILE.tgz|oci://REG/REPO/CHART:VER|URL/CHART:VER",
              help="Also carry this Helm chart: a packaged file, a chart in an OCI registry (with its cosign "
                   "signature, judged by --verify-key), or one of an HTTP Helm repository (digest checked against "
                   "its index.yaml, .prov carried); push-bundle puts it at REGISTRY/charts/NAME:VERSION "
                   "(repeatable).")
@click.option("--sign-key", type=click.Path(dir_okay=False), metavar="KEY.pem",
              help="Sign the lock with this PEM private key (ECDSA P-256/P-384, Ed25519, RSA) in cosign's "
                   "blob-signature form: inside the bundle and as NAME.lock.yaml.sig beside it. An encrypted "
                   "key's password comes from $MIRRORKIT_SIGN_KEY_PASSWORD.")
@click.option("--with-installer", is_flag=True,
              help="Also carry mirrorkit's offline installer (its wheels for CPython 3.11-3.13 on x86_64 and "
                   "aarch64, install.sh), so the far side needs no package index; see 'mirrorkit runbook'.")
@click.option("--installer", "installer_dir", type=click.Path(file_okay=False, exists=True), metavar="DIR",
              help="Carry this installer, built before with 'mirrorkit offline-installer -o DIR' "
                   "(implies --with-installer).")
@click.option("--package-source", "package_sources", multiple=True, metavar="OS=FILE",
              help="Carry the kernel packages of runtime-compiled nodes whose OS starts with OS from the "
                   "repositories of FILE (apt sources file or yum .repo; repeatable; longest OS wins).")
@click.option("--allow-unsigned-repo", is_flag=True,
              help="Carry a package repository whose metadata is unsigned (never a badly signed one).")
@FORMAT
@signature_options
@registry_options
def pull_bundle_command(plan: str, output: str | None, jobs: int, split: str | None, compress: str,
                        since: str | None, have: str | None, keep_work: bool, work_dir: str | None,
                        keep_going: bool, charts: tuple[str, ...], sign_key: str | None, with_installer: bool,
                        installer_dir: str | None, fmt: str,
                        package_sources: tuple[str, ...] = (), allow_unsigned_repo: bool = False,
                        **p: Any) -> None:
    """Connected side: copy every planned image into one verifiable bundle."""
    from mirrorkit.files import check_target
    from mirrorkit.plan import load_plan
    from mirrorkit.progress import bars, human, parse_size
    from mirrorkit.transfer.inventory import load_inventory
    from mirrorkit.transfer.pull import PullOptions, pull_bundle

    the_plan = load_plan(plan)
    signatures = _signatures(p)  # keys are read (exit 2 if unreadable) before any work starts
    signer = None
    if sign_key:
        from mirrorkit.trust.bundlesig import load_signing_key

        signer = load_signing_key(sign_key)
    if output is not None and not output.strip():
        raise InputError("-o: empty bundle path")
    if output and output.endswith(".zst") and compress == "none":
        compress = "zstd"  # the name asks for it; a plain tar under .zst would mislead
    out = Path(output) if output else Path("bundles") / (Path(plan).stem + (".tar.zst" if compress == "zstd" else ".tar"))
    check_target(out, "bundle")
    split_bytes = parse_size(split) if split else None
    if split_bytes is not None and split_bytes < MIN_SPLIT:
        raise InputError(f"--split {split}: volumes must be at least 64KiB")
    omit: set[str] = set()
    depends: list[str] = []
    if since:
        old = _old_lock(since)
        omit |= {b.digest for b in old.blobs} | {b.digest for b in old.omitted}
        depends.append(f"bundle {old.id} ({Path(since).name})")
    if have:
        blobs, what = load_inventory(have)
        omit |= set(blobs)
        depends.append(what)
    opts = PullOptions(output=out, jobs=jobs, split=split_bytes,
                       compress=None if compress == "none" else compress, omit=omit, depends_on=depends,
                       keep_work=keep_work, charts=list(charts), keep_going=keep_going,
                       work_dir=Path(work_dir) if work_dir else None, sign_key=signer,
                       with_installer=with_installer, installer=Path(installer_dir) if installer_dir else None,
                       package_sources=list(package_sources), allow_unsigned_repo=allow_unsigned_repo, retry=retry_from(p))
    if package_sources:
        from mirrorkit.packages.carry import parse_package_source

        for text in package_sources:       # a wrong flag is refused before any image moves
            parse_package_source(text)
        if not the_plan.packages:
            raise InputError("--package-source: the plan lists no driver packages (no runtime-compiled node "
                             "with a kernel; plan again without --no-driver-packages)")
    endpoints = endpoints_from(p)
    warn_unused_endpoints(endpoints, {i.source_ref.registry.lower() for i in the_plan.images})
    # the byte total is set once the walk knows the unique bytes (the plan's sizes count shared layers per image)
    with bars(len(the_plan.images), None, "fetching") as progress:
        sources = {i.source_ref.registry.lower() for i in the_plan.images if not i.local}
        report = pull_bundle(the_plan, opts, endpoints, credentials_from(p, None, sources), progress, signatures)
    data = {"images": report.images, "copied": report.copied, "reused": report.reused,
            "unique_bytes": report.unique_bytes, "bytes_saved_by_sharing": report.saved_bytes,
            "omitted_bytes": report.omitted_bytes, "seconds": round(report.seconds, 2),
            "up_to_date": report.up_to_date, "volumes": [str(v) for v in report.volumes],
            "lock": str(report.lock_path), "charts": report.charts,
            "signing": report.signing.to_dict() if report.signing else None,
            "installer": report.installer.to_dict() if report.installer else None}
    if package_sources:
        data["package_repos"] = report.package_repos
        data["package_files"] = report.package_files
        data["package_bytes"] = report.package_bytes
        for warning in report.package_warnings:
            click.echo(f"warning: {warning}", err=True)
    carried = report.signatures
    if carried is not None:
        data["artifacts"] = len(carried.artifacts)
        data["verifications"] = [v.to_dict() for v in report_verifications(carried)]
        for note in carried.notes:
            click.echo(f"note: {note}", err=True)
    if report.up_to_date:
        text = (f"{out} is up to date: {report.images} images, every digest unchanged "
                f"({report.seconds:.1f} s); lock {report.lock_path}")
    else:
        vols = ", ".join(str(v) for v in report.volumes)
        text = (f"bundled {report.images} images ({report.copied} copied, {report.reused} already fetched)"
                + (f" and {_n(report.charts, 'Helm chart')}" if report.charts else "") + f" in {report.seconds:.1f} s\n"
                f"  unique bytes {human(report.unique_bytes)}, saved by sharing {human(report.saved_bytes)}"
                + (f", left out (differential) {human(report.omitted_bytes)}" if report.omitted_bytes else "")
                + f"\n  wrote {vols} (+ .sha256 beside each)\n  lock {report.lock_path}")
        if report.installer:
            kit = report.installer
            text += (f"\n  carried mirrorkit's offline installer ({human(kit.size)}, {'/'.join(kit.platforms)}, "
                     f"CPython {'/'.join(kit.pythons)}): see 'mirrorkit runbook'")
        if package_sources:
            text += (f"\n  carried {_n(report.package_repos, 'package repository')}: "
                     f"{report.package_files} files, {human(report.package_bytes)} (signed metadata and packages)")
        if carried is not None:
            text += "".join(f"\n{line}" for line in [f"  carried {_n(len(carried.artifacts), 'signature artifact')}"
                                                      " (signatures, attestations, SBOMs, referrers)"]
                            + _signature_lines(report_verifications(carried)))
    if report.signing is not None:
        text += (f"\n  lock signed by {report.signing.key_fingerprint} ({report.signing.key_type}) at "
                 f"{report.signing.signed_at}" + (f"; signature {report.signature_path}" if report.signature_path
                                                  else ""))
    _emit(fmt, data, text)


def report_verifications(carried: Any) -> list[Any]:
    from mirrorkit.transfer.artifacts import lock_verifications

    return lock_verifications(carried.verification)


def _old_lock(path: str):
    from mirrorkit.bundle.inputs import load_plan_or_lock

    _, lock = load_plan_or_lock(path)
    if lock is None:
        raise InputError(f"--since {path}: expected an earlier bundle or its lock (NAME.lock.yaml)")
    return lock


@click.command("push-bundle", epilog="""
\b
Examples:
  mirrorkit push-bundle bundles/gpu.tar --registry harbor.local/gpu
  mirrorkit push-bundle bundles/gpu.001.tar bundles/gpu.000.tar --registry 10.0.0.5:5000 --insecure 10.0.0.5:5000
  echo "$PASS" | mirrorkit push-bundle gpu.tar --registry harbor.local/gpu --username robot --password-stdin
  mirrorkit push-bundle bundles/gpu.tar --registry harbor.local/gpu --bundle-key site-bundle.pub
  mirrorkit push-bundle gpu.tar --registry harbor.local/gpu --verify-key nvidia.pub --site-key site.pem
""")
@click.argument("bundle", nargs=-1, required=True, type=click.Path())
@click.option("--registry", metavar="HOST[:PORT][/PREFIX]", help="Destination registry (default: the plan's).")
@click.option("--mapping", type=click.Choice(STRATEGIES), help="Mapping when --registry is given (default: the plan's).")
@click.option("--check-blobs", is_flag=True,
              help="Count an image as already there only if every blob of it can be read; push the rest again "
                   "(repairs what verify reports as missing or unreadable blobs).")
@click.option("--packages-dir", type=click.Path(file_okay=False), metavar="DIR",
              help="Write every carried package repository as a partial mirror under DIR/<os>/<name>/ "
                   "(serve DIR with any web server); images are pushed only when a registry is known.")
@click.option("--site-key", metavar="KEY.pem", type=click.Path(dir_okay=False),
              help="Sign, at the mirror, each index --platform rewrote (several platforms kept), once --verify-key "
                   "has checked its platform manifests; the policy then lists the site's public key.")
@JOBS
@FORMAT
@signature_options
@bundle_key_option
@destination_options
def push_bundle_command(bundle: tuple[str, ...], registry: str | None, mapping: str | None, check_blobs: bool,
                        jobs: int, fmt: str, bundle_keys: tuple[str, ...], packages_dir: str | None = None,
                        site_key: str | None = None, **p: Any) -> None:
    """Air-gapped side: verify the bundle, push it, verify the registry."""
    from mirrorkit.oci.client import RegistryClient
    from mirrorkit.progress import bars, human
    from mirrorkit.transfer.push import push_bundle

    target = target_from({"registry": registry})
    signatures = _signatures(p)
    signed = check_bundle_keys([Path(b) for b in bundle], bundle_keys)   # before anything else is read
    key = None
    if site_key:
        from mirrorkit.trust.bundlesig import load_signing_key

        if not signatures.keys:
            raise InputError("--site-key needs --verify-key: the site signs only what it has verified")
        key = load_signing_key(site_key)   # one loader for every private key (bundle and site)
    if packages_dir is not None:
        from mirrorkit.transfer.packagesdir import write_packages_dir

        written, plan_registry = write_packages_dir([Path(b) for b in bundle], Path(packages_dir))
        if target is None and plan_registry is None:
            _emit(fmt, {"package_repos": written.repos, "package_files_written": written.files_written,
                        "package_files_kept": written.files_kept, "package_bytes_written": written.bytes_written},
                  _packages_line(written, packages_dir) + "\n  no registry given or planned: images not pushed")
            return
        click.echo(_packages_line(written, packages_dir), err=True)
    site_signed: list[str] = []
    with RegistryClient(endpoints_from(p), credentials_from(p, target), retry=retry_from(p)) as client, \
            bars(0, None, "uploading") as progress:
        report = push_bundle([Path(b) for b in bundle], client, target, mapping, jobs, progress, check_blobs,
                             signatures, signed.lock_sha256 if signed else None)
        if key is not None and not report.problems:
            from mirrorkit.bundle.reader import BundleReader
            from mirrorkit.destinations import destination_pairs
            from mirrorkit.transfer.sitesign import sign_rewritten

            with BundleReader([Path(b) for b in bundle]) as reader:
                lock = reader.lock
            dest = destination_pairs(lock.plan, [(i.source, i.destination) for i in lock.images], target, mapping)
            site_signed = sign_rewritten(client, lock, dest, key)
    data = {"images_pushed": report.images_pushed, "images_skipped": report.images_skipped,
            "blobs_uploaded": report.blobs_uploaded, "bytes_uploaded": report.bytes_uploaded,
            "blobs_mounted": report.blobs_mounted, "blobs_skipped": report.blobs_skipped,
            "bytes_skipped": report.bytes_skipped, "verified": report.verified,
            "problems": report.problems, "seconds": round(report.seconds, 2),
            "charts_pushed": report.charts_pushed, "charts_skipped": report.charts_skipped}
    pushed_artifacts = report.signatures.manifests if report.signatures else 0
    data["artifacts_pushed"] = pushed_artifacts
    data["verifications"] = [v.to_dict() for v in report.verifications]
    data["site_signed"] = site_signed
    text = (f"pushed {_n(report.images_pushed, 'image')} ({report.images_skipped} already there)"
            + (f", {_n(report.charts_pushed, 'Helm chart')} ({report.charts_skipped} already there)"
               if report.charts_pushed or report.charts_skipped else "")
            + f" in {report.seconds:.1f} s\n"
            f"  blobs uploaded {report.blobs_uploaded} ({human(report.bytes_uploaded)}), mounted "
            f"{report.blobs_mounted}, skipped {report.blobs_skipped} ({human(report.bytes_skipped)})\n"
            f"  verified {report.verified} destination manifests digest for digest")
    text += "".join(f"\n{line}" for line in ([f"  pushed {_n(pushed_artifacts, 'signature artifact')} beside them"]
                                               if pushed_artifacts else []) + _signature_lines(report.verifications)
                                              + ([f"  signed {len(site_signed)} rewritten index(es) with the "
                                                  "site key"] if site_signed else []))
    _emit(fmt, data, text)
    if report.problems:
        raise OperationError("after the push the registry does not match the bundle: " + "; ".join(report.problems))


def _packages_line(report: Any, root: str) -> str:
    from mirrorkit.progress import human

    return (f"wrote {_n(report.repos, 'package repository')} under {root}: {report.files_written} files "
            f"({human(report.bytes_written)}), {report.files_kept} already there")


@click.command("verify", epilog="""
\b
Examples:
  mirrorkit verify plan.yaml --registry harbor.local/gpu
  mirrorkit verify bundles/gpu.tar --format json
""")
@click.argument("source", type=click.Path(exists=True))
@click.option("--registry", metavar="HOST[:PORT][/PREFIX]", help="Registry to check (default: the plan's destinations).")
@click.option("--mapping", type=click.Choice(STRATEGIES))
@click.option("--manifests-only", is_flag=True,
              help="Check manifests only, not that every blob of every platform can be read (faster).")
@click.option("--packages-dir", type=click.Path(file_okay=False), metavar="DIR",
              help="Check the package repositories push-bundle --packages-dir wrote: every file, size and sha256 "
                   "(SOURCE must be the bundle or its lock).")
@JOBS
@FORMAT
@signature_options
@bundle_key_option
@destination_options
def verify_command(source: str, registry: str | None, mapping: str | None, manifests_only: bool, jobs: int, fmt: str,
                   bundle_keys: tuple[str, ...], packages_dir: str | None = None, **p: Any) -> None:
    """Preflight: is every planned image in the registry, digest for digest, every blob readable?"""
    from mirrorkit.bundle.inputs import load_plan_or_lock
    from mirrorkit.destinations import destination_pairs
    from mirrorkit.oci.client import RegistryClient
    from mirrorkit.transfer.verify import ImageState, verify_registry

    check_bundle_keys(source, bundle_keys)          # before anything else of the bundle is read
    plan, lock = load_plan_or_lock(source)
    if packages_dir is not None:
        from mirrorkit.packages.mirror import verify_packages

        if lock is None:
            raise InputError("--packages-dir: give the bundle or its lock (a plan does not list package files)")
        checked = verify_packages(lock, Path(packages_dir))
        summary = (f"{checked.files_kept} package files under {packages_dir} match the bundle"
                   + "".join(f"\n  {problem}" for problem in checked.problems))
        if target_from({"registry": registry}) is None and plan.registry is None:
            _emit(fmt, {"passed": not checked.problems, "package_files_ok": checked.files_kept,
                        "problems": checked.problems}, summary)
            if checked.problems:
                raise OperationError(f"{len(checked.problems)} package file(s) missing or different under "
                                     f"{packages_dir}: {checked.problems[0]}")
            return
        click.echo(summary, err=True)
        if checked.problems:
            raise OperationError(f"{len(checked.problems)} package file(s) missing or different under "
                                 f"{packages_dir}: {checked.problems[0]}")
    target = target_from({"registry": registry})
    signatures = _signatures(p)
    items: list[tuple[str, str | None, str | None, list[str]]]
    if lock is not None:
        items = [(i.source, i.destination, i.digest, i.manifests) for i in lock.images]
    else:
        items = [(i.source, i.destination, i.digest, []) for i in plan.images]
    dest = destination_pairs(plan, [(s, d) for s, d, _, _ in items], target, mapping)
    expected = [(dest[(s, d)], digest, kids) for s, d, digest, kids in items]
    from mirrorkit.lock import lock_charts
    from mirrorkit.transfer.charts import destination

    if lock is not None and lock.charts:
        charts = lock_charts(lock)
        expected += [(destination(c, target), c.digest, []) for c in charts]
        items += [(c.name, None, c.digest, []) for c in charts]
    try:
        with RegistryClient(endpoints_from(p), credentials_from(p, target), retry=retry_from(p)) as client:
            result = verify_registry(client, expected, jobs, blobs=not manifests_only)
            # every image's signature checked where cosign would look for it, at the mirror
            signed = None
            if signatures.keys:
                from mirrorkit.transfer.artifacts import signed_at_destination

                signed_charts = [(destination(c, target), c.digest) for c in lock_charts(lock) if c.kind == "oci"] \
                    if lock is not None and lock.charts else []
                signed = signed_at_destination(client, plan, lock, dest, signatures.keys, signed_charts)
    except MirrorkitError as exc:
        if fmt == "json":       # a script reading stdout still gets a verdict, and why
            click.echo(json.dumps({"passed": False, "ok": [], "missing": [], "different": [], "error": str(exc)},
                                  indent=2))
        raise
    data = {"passed": result.passed, "ok": result.ok, "missing": result.missing, "different": result.different}
    what = "images and charts" if lock is not None and lock.charts else "images"
    lines = [f"{len(result.ok)} of {len(items)} {what} present with the expected digest"]
    lines += [f"  missing: {m}" for m in result.missing] + [f"  different: {d}" for d in result.different]
    if signed is not None:
        data["signatures"] = {"passed": signed.passed, "verdicts": [v.describe() for v in signed.verdicts]}
        # on failure the list goes once, in the error line below; the report says how many
        lines.append(f"  {signed.summary()}" if signed.passed else
                     f"  {len(signed.failures)} of {len(signed.verdicts)} image digests lack a valid signature")
    _emit(fmt, data, "\n".join(lines))
    if signed is not None and not signed.passed:
        raise OperationError(signed.summary())
    if not result.passed:
        hint = ("; push-bundle --check-blobs (or mirror) puts unreadable blobs back"
                if ImageState.BLOB in result.states else "")
        raise OperationError(f"{len(result.missing)} missing, {len(result.different)} different{hint}")


@click.command("mirror", epilog="""
\b
Examples:
  mirrorkit mirror plan.yaml --registry harbor.local/gpu
""")
@click.argument("plan", type=click.Path(dir_okay=False))
@click.option("--registry", metavar="HOST[:PORT][/PREFIX]", help="Destination registry (default: the plan's).")
@click.option("--mapping", type=click.Choice(STRATEGIES))
@JOBS
@FORMAT
@signature_options
@registry_options
def mirror_command(plan: str, registry: str | None, mapping: str | None, jobs: int, fmt: str, **p: Any) -> None:
    """Registry to registry, for a host that sees both networks; verified afterwards."""
    from mirrorkit.oci.client import RegistryClient
    from mirrorkit.plan import load_plan
    from mirrorkit.transfer.mirror import mirror

    the_plan = load_plan(plan)
    target = target_from({"registry": registry})
    signatures = _signatures(p)
    creds = credentials_from(p, target)
    endpoints = endpoints_from(p)
    warn_unused_endpoints(endpoints, {i.source_ref.registry.lower() for i in the_plan.images})
    with RegistryClient(endpoints, creds, retry=retry_from(p)) as client:
        report = mirror(the_plan, client, target, mapping, jobs, signatures=signatures)
    data = {"copied": report.copied, "skipped": report.skipped, "verified": report.verified,
            "problems": report.problems, "seconds": round(report.seconds, 2),
            "artifacts": report.artifacts}
    _emit(fmt, data, f"mirrored {report.copied} images ({report.skipped} already there) in {report.seconds:.1f} s; "
                     f"verified {report.verified}")
    if report.problems:
        raise OperationError("after mirroring the registry does not match the plan: " + "; ".join(report.problems))


@click.command("inventory", epilog="""
\b
Examples:
  mirrorkit inventory --registry harbor.local/gpu -o inventory.json
""")
@click.option("--registry", required=True, metavar="HOST[:PORT][/PREFIX]")
@click.option("--repos", multiple=True, help="Only these repositories (default: the registry's catalog).")
@click.option("-o", "--output", help="Write here (default: stdout).")
@JOBS
@destination_options
def inventory_command(registry: str, repos: tuple[str, ...], output: str | None, jobs: int, **p: Any) -> None:
    """What the registry already holds, for pull-bundle --have."""
    from mirrorkit.cli.main import write_output
    from mirrorkit.oci.client import RegistryClient
    from mirrorkit.refs import RegistryTarget
    from mirrorkit.transfer.inventory import dumps, take_inventory

    target = RegistryTarget.parse(registry)       # --registry is required here
    with RegistryClient(endpoints_from(p), credentials_from(p, target), retry=retry_from(p)) as client:
        inv = take_inventory(client, target, list(repos) or None, jobs)
    write_output(dumps(inv), output)
    click.echo(f"{len(inv['repositories'])} repositories, {len(inv['manifests'])} manifests, "
               f"{len(inv['blobs'])} blobs", err=True)
