#!/usr/bin/env python3
"""What a bundle (lock) signature costs: signing at pull, checking before push (issue 17).

Usage: ``python scripts/bench_bundlesig.py [BUNDLE.tar]`` (default: ``make demo``'s bundle in
bundles/demo/). For each key type it times ``sign_lock`` and ``check_lock_signature`` over the
bundle's own lock and over a 4 MiB lock (a bundle of several hundred images), and it times
``check_bundle`` (reads only the tar's head) against ``BundleReader.verify`` (hashes every
byte) on the same bundle. Prints JSON; median of 7 runs, in milliseconds.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from cryptography.hazmat.primitives import serialization  # noqa: E402
from kit.cosign import make_key, write_public_key  # noqa: E402

from mirrorkit.bundle.reader import BundleReader  # noqa: E402
from mirrorkit.bundle.volumescan import lock_heads  # noqa: E402
from mirrorkit.trust.bundlesig import check_bundle, check_lock_signature, load_signing_key, sign_lock  # noqa: E402
from mirrorkit.trust.keys import load_key  # noqa: E402

RUNS = 7


def ms(fn: Callable[[], object]) -> float:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 3)


def main() -> int:
    bundle = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "bundles" / "demo" / "gpu-operator-v23.9.2.tar")
    if not bundle.is_file():
        print(f"{bundle}: no bundle (run 'make demo' first, or name one)", file=sys.stderr)
        return 2
    lock = lock_heads([bundle])[0].lock
    big = (lock * (4 * (1 << 20) // len(lock) + 1))[: 4 << 20]
    out: dict[str, object] = {"bundle": str(bundle), "bundle_bytes": bundle.stat().st_size, "lock_bytes": len(lock)}
    with tempfile.TemporaryDirectory() as tmp:
        keys: dict[str, object] = {}
        for kind in ("p256", "p384", "ed25519", "rsa"):
            key = make_key(kind)
            pem = Path(tmp) / f"{kind}.pem"
            pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
            signer, pub = load_signing_key(pem), load_key(write_public_key(key, Path(tmp) / f"{kind}.pub"))
            sig, sig_big = sign_lock(lock, signer), sign_lock(big, signer)
            keys[kind] = {"sign_lock_ms": ms(lambda s=signer: sign_lock(lock, s)),
                          "check_lock_ms": ms(lambda s=sig, p=pub: check_lock_signature(lock, s, [p])),
                          "sign_4MiB_ms": ms(lambda s=signer: sign_lock(big, s)),
                          "check_4MiB_ms": ms(lambda s=sig_big, p=pub: check_lock_signature(big, s, [p]))}
        out["keys"] = keys
    signed = lock_heads([bundle])[0].signature is not None
    if signed:
        pub_path = bundle.parent / "site-bundle.pub"
        out["check_bundle_ms"] = ms(lambda: check_bundle(bundle, [pub_path]))

    def verify() -> None:
        with BundleReader([bundle]) as reader:
            reader.verify()
    out["bundle_reader_verify_ms"] = ms(verify)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
