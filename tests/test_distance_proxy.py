"""The bench's distance proxy (kit.distance) passes bytes untouched and really puts the distance in."""

from __future__ import annotations

import hashlib
import time

import httpx
from kit.distance import DistanceProxy
from kit.images import make_image, make_layer
from kit.push import push_image
from kit.registryd import RegistryServer


def test_the_distance_proxy_passes_a_blob_untouched_after_its_round_trips(registry: RegistryServer) -> None:
    layer = make_layer("distance/layer", 1 << 20)
    push_image(registry.url, "far/app", "v1", make_image("distance/app", [layer]))
    with DistanceProxy(registry.host, delay=0.05, rate=20e6) as far, httpx.Client() as http:
        start = time.monotonic()
        data = http.get(f"http://{far.host}/v2/far/app/blobs/{layer.digest}").content
        took = time.monotonic() - start
    assert "sha256:" + hashlib.sha256(data).hexdigest() == layer.digest
    # a handshake and a request each cross twice; 1 MB over 20 MB/s adds 0.05 s more: a floor, never a ceiling
    assert took >= 4 * 0.05 + 0.04
