"""Test kit: small but real OCI images and real registries on loopback.

The kit exists so that tests, ``make demo`` and ``make bench`` exercise mirrorkit
against the same things it meets in production (gzip layers, image indexes, a real
``docker-registry`` with htpasswd or TLS) without any network beyond 127.0.0.1.

    images    deterministic builders of layers, images and indexes
    registryd RegistryServer: a throw-away docker-registry process
    push      a minimal uploader to seed registries (not the product's client)
    cosign    cosign-format signatures, attestations and SBOM referrers for test images
"""
