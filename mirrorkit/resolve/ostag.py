"""The OS tag the operator appends to driver-type images, release by release.

Read from the operator's Go code at each release tag (``kernelFullVersion`` in
controllers/object_controls.go up to v25.10, ``getGPUNodeOSInfo`` in
controllers/state_manager.go and ``getOSTag`` in internal/state/nodepool.go
from v26.3):

- up to v25.10: ``<ID><VERSION_ID>`` exactly as NFD reports them
  (``ubuntu22.04``, ``rhel8.8``, ``rocky8.6``, ``rhcos4.14``);
- v26.3: Rocky Linux keeps only the major version (``rocky9``), and RHEL does
  too from RHEL 10 on (``rhel10`` but still ``rhel9.4``);
- v26.7 on: RHEL, Rocky Linux and Oracle Linux keep only the major version.

Getting this wrong is exactly the ImagePullBackOff an air-gapped site cannot
fix quickly, so the rules live in one table with the release that brought each.
"""

from __future__ import annotations

from mirrorkit.resolve.catalog import for_release, release_key

# OS IDs whose tag drops the minor version, and (for rhel in v26.3) the first major that does
_RULES: tuple[tuple[str, dict[str, int]], ...] = (
    ("v0", {}),
    ("v26.3.0", {"rocky": 0, "rhel": 10}),
    ("v26.7.0", {"rocky": 0, "rhel": 0, "ol": 0}),
)
PRECOMPILED_SINCE = "v23.3.0"
LATEST = "v999"


def _rule(release: str | None) -> dict[str, int]:
    return for_release(_RULES, release or LATEST)


def os_tag(release: str | None, os_id: str, os_version: str) -> str:
    """``ubuntu22.04``, ``rhel9``, ``rhcos4.14``: what this release's operator appends."""
    rule = _rule(release)
    version = os_version
    if os_id in rule:
        major = os_version.split(".")[0]
        threshold = rule[os_id]
        if threshold == 0 or (major.isdigit() and int(major) >= threshold):
            version = major
    return f"{os_id}{version}"


def supports_precompiled(release: str | None) -> bool:
    return release is None or release_key(release) >= release_key(PRECOMPILED_SINCE)
