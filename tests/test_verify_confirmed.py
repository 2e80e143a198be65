"""verify_registry's ``confirmed``: a blob this run already saw in a repository (HEAD 200, an upload or a
mount acknowledged) is not asked for again after the push; every other blob still is."""

from __future__ import annotations

from kit.images import make_image, make_index, make_layer
from kit.push import push_image
from kit.registryd import RegistryServer

from mirrorkit.oci.client import RegistryClient
from mirrorkit.oci.transport import Endpoints
from mirrorkit.refs import Ref
from mirrorkit.transfer.verify import verify_registry


def test_confirmed_blobs_are_not_asked_for_again_the_others_are(registry: RegistryServer) -> None:
    index = make_index([make_image(f"v/{a}", [make_layer(f"v/{a}", 4 << 10)], ("linux", a))
                        for a in ("amd64", "arm64")])
    push_image(registry.url, "team/app", "1", index)
    layer = index.images[1].layers[-1].digest
    link = registry.storage_dir / "docker/registry/v2/repositories/team/app/_layers/sha256" / layer[7:] / "link"
    link.unlink()                                          # the registry lost one blob; the manifest is there
    ref = Ref.parse(f"{registry.host}/team/app:1")
    asked: list[str] = []

    def confirmed(dest: Ref, digest: str) -> bool:
        asked.append(digest)
        return digest != layer

    with RegistryClient(Endpoints(insecure={registry.host})) as client:
        found = verify_registry(client, [(ref, index.digest, [])], blobs=True, confirmed=confirmed)
        assert found.missing == [f"{ref}: blob {layer} is missing"]
        assert layer in asked and len(asked) == 4          # two configs, two layers
        trusting = verify_registry(client, [(ref, index.digest, [])], blobs=True, confirmed=lambda d, b: True)
        assert trusting.passed and trusting.ok == [f"{ref}@{index.digest}"]
        assert not verify_registry(client, [(ref, index.digest, [])], blobs=True).passed
