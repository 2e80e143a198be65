"""What pull-bundle is given besides the plan, checked before anything is fetched.

The plan must carry images, no two for one destination; --chart and --installer are read
and refused (exit 2) when malformed, before the first byte moves; charts from Helm
repositories (REPO_URL/CHART:VERSION) are downloaded into the work folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mirrorkit.errors import InputError
from mirrorkit.mapping import check_collisions
from mirrorkit.oci.client import RegistryClient
from mirrorkit.oci.credentials import CredentialStore
from mirrorkit.oci.layout import BlobStore
from mirrorkit.oci.transport import Endpoints
from mirrorkit.plan import Plan

if TYPE_CHECKING:
    from mirrorkit.chartref import ChartRef
    from mirrorkit.installer.build import Installer
    from mirrorkit.transfer.charts import HelmChart
    from mirrorkit.transfer.pull import PullOptions


@dataclass
class Inputs:
    """What the command line names besides the plan, read and checked before anything is fetched."""

    charts: list[HelmChart]         # --chart files (and, once fetched, charts from Helm repositories)
    remote: list[ChartRef]          # --chart oci://... and REPO_URL/CHART:VERSION
    prebuilt: Installer | None      # --installer DIR, checked against its SHA256SUMS
    installing: bool                # an installer travels (--with-installer or --installer)


def check_plan(plan: Plan) -> None:
    """A plan pull-bundle can carry: images, and no two sources for one destination."""
    if not plan.images:
        raise InputError("the plan has no images")
    # a bundle that push-bundle would refuse must not be discovered on the far side of the air gap
    check_collisions((i.source_ref, dest) for i in plan.images if (dest := i.destination_ref) is not None)


def read_inputs(opts: PullOptions) -> Inputs:
    """--chart and --installer, refused at once (exit 2) when malformed: before anything is fetched."""
    from mirrorkit.chartref import parse_chart_ref
    from mirrorkit.transfer.charts import load_charts

    specs = list({str(c): parse_chart_ref(str(c)) for c in opts.charts}.values())  # malformed: exit 2, at once
    charts = load_charts([s.path for s in specs if not s.remote])  # --chart files: refused before anything is fetched
    remote = [s for s in specs if s.remote]
    prebuilt = None
    if opts.installer is not None:
        from mirrorkit.installer.carry import load

        prebuilt = load(opts.installer)  # checked against its SHA256SUMS before anything is fetched
    return Inputs(charts, remote, prebuilt, prebuilt is not None or opts.with_installer)


def repo_charts(remote: list[ChartRef], endpoints: Endpoints, credentials: CredentialStore,
                client: RegistryClient, store: BlobStore) -> list[HelmChart]:
    """The --chart REPO_URL/CHART:VERSION archives, downloaded into the work folder."""
    from mirrorkit.chartref import REPO

    if not remote:
        return []
    from mirrorkit.oci.httpfile import HttpFiles
    from mirrorkit.transfer.remotecharts import fetch_repo_chart

    with HttpFiles(endpoints, credentials, client.retry) as files:
        return [fetch_repo_chart(files, s, store.root / "tmp") for s in remote if s.kind == REPO]
