"""The OCI 1.1 referrers API (``GET /v2/<repo>/referrers/<digest>``) and the descriptor lists it answers with.

A registry without the API (distribution 2.8 answers 404) or one that refuses it
(any 4xx) gives None: the caller then reads the ``sha256-<hex>`` fallback tag index
instead, whose ``manifests`` are read with :func:`descriptors` too. A registry that is
failing or away (5xx, connection errors, after the retry policy) is an error: it must
not silently change where signatures are looked for.
"""

from __future__ import annotations

from collections.abc import Callable

from mirrorkit.errors import RegistryError
from mirrorkit.oci.client import MAX_SMALL_BLOB, RegistryClient
from mirrorkit.oci.manifests import OCI_INDEX
from mirrorkit.oci.model import Descriptor, parse_index
from mirrorkit.refs import Ref


def descriptors(data: bytes, what: str = "referrers index") -> list[Descriptor]:
    """The descriptors of an index's ``manifests``; a malformed one is refused (the model's one rule),
    never silently left out: a dropped descriptor would be a signature silently not carried."""
    return list(parse_index(data, what).manifests)


def referrers(client: RegistryClient, ref: Ref, digest: str,
              no_api: Callable[[], None] | None = None) -> list[Descriptor] | None:
    """The referrers of ``digest`` in ``ref``'s repository, or None when the registry has no such API.

    ``no_api`` is called when the answer says the registry has no referrers API at all (404, 405
    or 400 to an existing repository, or an answer that is not an index), rather than refusing us:
    the caller need not ask its other repositories."""
    try:
        resp = client.request(ref.registry, "GET", f"/v2/{ref.repository}/referrers/{digest}",
                              scope=f"repository:{ref.repository}:pull",
                              headers={"Accept": OCI_INDEX}, ok=(200, 404, 405, 400))
    except RegistryError as exc:
        if exc.refused:                 # answered no (a 4xx, AuthError included): the fallback tags answer instead
            return None
        raise                           # a registry failing or away: not a reason to look elsewhere
    if resp.status_code != 200 or "json" not in resp.headers.get("Content-Type", ""):
        if no_api is not None:
            no_api()
        return None
    return descriptors(resp.content[:MAX_SMALL_BLOB], f"{ref.name}: referrers of {digest}")
