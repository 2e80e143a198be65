"""``mirrorkit serve``: a read-only OCI registry and package tree served straight from a verified bundle.

index (what the bundle serves, built once from the verified lock: repositories, tags,
manifests, blob pieces, referrers, package files), ranges (the ``Range`` header), auth
(htpasswd, bcrypt), accesslog (one line per request, text or JSON), app (the aiohttp
application and its routes), blobsend (bytes out: ``sendfile`` on plain HTTP, reads on TLS),
run (verify, index, listen, stop on SIGTERM/SIGINT), unit (the systemd unit). The server
reads the bundle's volumes in place: no extraction, no copy, no scratch disk.
"""
