"""The OCI side: registry client, credentials, endpoints, manifests, blob layout.

Only this package touches the network.
"""

import sys

# ``import httpx`` also imports httpx's own command line (httpx._main), which loads rich's
# console, click and pygments: 41 ms of every mirrorkit command that reaches a registry,
# for code mirrorkit never runs. A None entry in sys.modules makes that one import fail,
# and httpx then defines its stand-in ``httpx.main`` (what it does when its CLI extras are
# not installed). setdefault: if something imported httpx before us, nothing changes.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
