"""The OCI model: one parse, one rule for bad descriptors (refuse), the exact bytes and unknown fields kept."""

from __future__ import annotations

import json

import pytest
from kit.images import make_image, make_index, make_layer

from mirrorkit.errors import OperationError
from mirrorkit.oci import manifests, model
from mirrorkit.oci.referrers import descriptors

GOOD = "sha256:" + "a" * 64


def test_an_image_and_an_index_parse_into_frozen_values_with_their_exact_bytes() -> None:
    image = make_image("model/amd64", [make_layer("model/base", 1_000)], ("linux", "amd64"))
    index = make_index([image])
    parsed = model.parse(index.data, "idx")
    assert isinstance(parsed, model.Index) and parsed.raw == index.data
    [child] = parsed.manifests
    assert (child.digest, child.size, child.platform) == (image.digest, image.size, "linux/amd64")
    one = model.parse(image.manifest, "img")
    assert isinstance(one, model.Manifest) and one.raw == image.manifest
    assert [d.digest for d in one.blobs()] == [b.digest for b in image.blobs()]
    with pytest.raises(AttributeError):
        child.digest = GOOD  # type: ignore[misc]  # frozen


def test_unknown_fields_are_kept_not_dropped() -> None:
    doc = {"schemaVersion": 2, "mediaType": model.OCI_INDEX, "x-vendor": {"keep": True},
           "manifests": [{"digest": GOOD, "size": 3, "mediaType": model.OCI_MANIFEST, "x-extra": 1,
                          "artifactType": "application/vnd.example+json", "annotations": {"a": "b"}}]}
    parsed = model.parse_index(json.dumps(doc).encode(), "idx")
    assert parsed.fields["x-vendor"] == {"keep": True}
    [d] = parsed.manifests
    assert d.fields["x-extra"] == 1 and d.fields["annotations"] == {"a": "b"}
    assert d.artifact_type == "application/vnd.example+json"


@pytest.mark.parametrize("entry, message", [
    ({"digest": "sha256:short", "size": 1}, "descriptor without a valid sha256 digest"),
    ({"digest": "md5:" + "a" * 32, "size": 1}, "descriptor without a valid sha256 digest"),
    ({"size": 1}, "descriptor without a valid sha256 digest"),
    ({"digest": GOOD, "size": -1}, "has an invalid size"),
    ({"digest": GOOD, "size": True}, "has an invalid size"),
    ({"digest": GOOD, "size": "12"}, "has an invalid size"),
    ({"digest": GOOD, "size": 1, "mediaType": "not a media type"}, "mediaType 'not a media type' is not a media"),
    ({"digest": GOOD, "size": 1, "mediaType": 7}, "mediaType 7 is not a media type"),
    ("just a string", "descriptor without a valid sha256 digest"),
])
def test_a_bad_descriptor_is_refused_by_every_reader(entry: object, message: str) -> None:
    index = json.dumps({"schemaVersion": 2, "manifests": [entry]}).encode()
    image = json.dumps({"schemaVersion": 2, "config": entry, "layers": []}).encode()
    with pytest.raises(OperationError, match=message):
        model.parse(index, "idx")
    with pytest.raises(OperationError, match=message):
        manifests.children(manifests.parse(index, "idx"), "idx")          # the copy engine's path
    with pytest.raises(OperationError, match=message):
        manifests.image_blobs(manifests.parse(image, "img"), "img")
    with pytest.raises(OperationError, match=message):
        descriptors(index, "referrers")      # a referrers answer: refused too, never silently shortened


@pytest.mark.parametrize("data, message", [
    (b"{", "not valid JSON"), (b"[1]", "not a JSON object"),
    (b'{"manifests": [], "layers": []}', "both 'manifests' and 'layers'"),
    (b'{"manifests": {"digest": "x"}}', "'manifests' is not a list"),
])
def test_documents_no_registry_should_hold_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(OperationError, match=message):
        model.parse(data, "doc")
