"""What carrying signatures costs pull-bundle (issue 9): `.venv/bin/python scripts/bench_signatures.py`.

Serves the 16-image GPU-Operator-shaped set (the one `make bench` uses) from a real
docker-registry on 127.0.0.1, with no signatures at all, and times pull-bundle from
scratch with signature carrying (the default) and with --no-signatures, alternating
so both see the same machine load. Counts the requests the upstream registry logged
for each run. Then signs every image (index + platforms, as `cosign sign --recursive`)
and times a carrying, verifying run for comparison. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from kit import cosign  # noqa: E402
from kit.images import GPU_OPERATOR_REFS, gpu_operator_like_set  # noqa: E402
from kit.push import push_image  # noqa: E402
from kit.registryd import RegistryServer  # noqa: E402

MIRRORKIT = str(Path(sys.executable).parent / "mirrorkit")
WORK = ROOT / "bundles" / "bench-signatures"


def requests_logged(server: RegistryServer) -> int:
    text = server.log_path.read_text(errors="replace") if server.log_path.exists() else ""
    return sum(1 for line in text.splitlines() if '"GET /v2/' in line or '"HEAD /v2/' in line)


def pull(plan: Path, ep: list[str], server: RegistryServer, *extra: str) -> tuple[float, int]:
    bundle = WORK / "bench.tar"
    for leftover in WORK.glob("bench*"):
        if leftover.is_dir():
            shutil.rmtree(leftover)
        else:
            leftover.unlink()
    for work in WORK.glob(".bench*"):
        shutil.rmtree(work, ignore_errors=True)
    before = requests_logged(server)
    t0 = time.monotonic()
    subprocess.run([MIRRORKIT, "pull-bundle", str(plan), "-o", str(bundle), *ep, *extra], check=True,
                   capture_output=True)
    seconds = time.monotonic() - t0
    time.sleep(0.3)  # let the registry flush its access log
    return seconds, requests_logged(server) - before


def discovery_alone(plan: Path, upstream: RegistryServer) -> dict:
    """The signature phase of pull-bundle on its own, in process: its seconds and its requests."""
    import tempfile

    from mirrorkit.oci import manifests
    from mirrorkit.oci.client import RegistryClient
    from mirrorkit.oci.layout import BlobStore
    from mirrorkit.oci.transport import Endpoints
    from mirrorkit.plan import load_plan
    from mirrorkit.transfer.artifacts import SignatureOptions, Subject, carry_into_store
    from mirrorkit.transfer.engine import Engine

    the_plan = load_plan(str(plan))
    endpoints = Endpoints(overrides={"nvcr.io": f"http://{upstream.host}"}, insecure={upstream.host})
    with RegistryClient(endpoints) as client, tempfile.TemporaryDirectory() as tmp:
        subjects = []
        for img in the_plan.images:
            top = client.get_manifest(img.source_ref, img.digest)
            kids = [c.digest for c in manifests.children(manifests.parse(top.data, img.source), img.source)]
            subjects.append(Subject.of(img.source, img.destination, img.source_ref, top.digest, None, kids))
        count = [0]
        original = client.request

        def counting(*args, **kwargs):
            count[0] += 1
            return original(*args, **kwargs)

        client.request = counting  # type: ignore[method-assign]
        t0 = time.monotonic()
        carried = carry_into_store(Engine(4, client.retry), client, BlobStore(Path(tmp)), subjects,
                                   SignatureOptions(), jobs=4)
        return {"discovery_seconds": round(time.monotonic() - t0, 3), "discovery_requests": count[0],
                "artifacts_found": len(carried.artifacts)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layer-size", type=int, default=10 << 20)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    out: dict = {"layer_size": args.layer_size, "rounds": args.rounds}
    with RegistryServer(access_log=True) as upstream:
        content = gpu_operator_like_set(GPU_OPERATOR_REFS, layer_size=args.layer_size)
        for repo, tag in GPU_OPERATOR_REFS:
            push_image(upstream.url, repo, tag, content[f"{repo}:{tag}"])
        ep = ["--source-endpoint", f"nvcr.io=http://{upstream.host}"]
        plan = WORK / "plan.yaml"
        argv = [MIRRORKIT, "plan", "--registry", "mirror.local/bench", "--resolve", *ep, "-o", str(plan)]
        for repo, tag in GPU_OPERATOR_REFS:
            argv += ["--image", f"nvcr.io/{repo}:{tag}"]
        subprocess.run(argv, check=True, capture_output=True)
        pull(plan, ep, upstream)  # warm the registry's caches once
        carry, skip, carry_req, skip_req = [], [], [], []
        for n in range(args.rounds):
            order = [("carry", ()), ("skip", ("--no-signatures",))]
            for label, extra in order if n % 2 == 0 else reversed(order):
                seconds, reqs = pull(plan, ep, upstream, *extra)
                (carry if label == "carry" else skip).append(seconds)
                (carry_req if label == "carry" else skip_req).append(reqs)
        out["unsigned"] = {
            "carry_seconds": [round(s, 2) for s in carry], "no_signatures_seconds": [round(s, 2) for s in skip],
            "median_carry": round(statistics.median(carry), 2),
            "median_no_signatures": round(statistics.median(skip), 2),
            "overhead": round(statistics.median(carry) / statistics.median(skip) - 1, 4),
            "requests_carry": carry_req[-1], "requests_no_signatures": skip_req[-1],
            "repositories": len({r for r, _ in GPU_OPERATOR_REFS}),
        }
        out["unsigned"].update(discovery_alone(plan, upstream))
        print(json.dumps(out["unsigned"]), file=sys.stderr, flush=True)
        key = cosign.make_key("p256")
        for repo, tag in GPU_OPERATOR_REFS:
            cosign.sign_recursive(upstream.url, repo, f"nvcr.io/{repo}", content[f"{repo}:{tag}"], key)
        pub = cosign.write_public_key(key, WORK / "signing-key.pub")
        signed = [pull(plan, ep, upstream, "--verify-key", str(pub)) for _ in range(2)]
        out["signed_verified"] = {"seconds": [round(s, 2) for s, _ in signed], "requests": signed[-1][1]}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
