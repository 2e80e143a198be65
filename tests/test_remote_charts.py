"""Charts from where users get them: ``--chart oci://…`` (with its cosign signature) and ``--chart REPO_URL/CHART:VER``.

A loopback docker-registry plays nvcr.io and holds the images and the chart as a Helm OCI
artifact, signed in cosign's format by the test kit; a static Helm repository (index.yaml,
archive, .prov) is served by Python's http.server on 127.0.0.1; a second registry is the
private one. The chart is read back from it with oras-py.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import httpx
import oras.client
import pytest
import yaml
from click.testing import CliRunner, Result
from kit.cosign import make_key, sbom_referrer, sign, sign_recursive, tag_for, write_public_key
from kit.helmcharts import HELM_CHART, HELM_CONFIG, HelmRepository, push_oci_chart
from kit.push import push_image
from kit.tls import make_ca
from test_charts_bundle import CHART_YAML, chart_bytes, images

from mirrorkit.cli.main import main
from mirrorkit.oci.httpfile import HttpFiles

PREFIX = "kse"
PROV = b"-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nname: gpu-operator\n...\n-----END PGP SIGNATURE-----\n"
META = {"name": "gpu-operator", "version": "v23.9.2", "appVersion": "v23.9.2", "apiVersion": "v2",
        "description": "NVIDIA GPU Operator"}
CHART_REPO = "nvidia/cloud-native-charts/gpu-operator"


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def lock_of(bundle: Path) -> dict:
    return yaml.safe_load(bundle.with_name(bundle.name.removesuffix(".tar") + ".lock.yaml").read_text())


@pytest.fixture
def signed(tmp_path: Path, registry_factory) -> SimpleNamespace:
    """Upstream with signed images and a signed chart (plus an SBOM referrer); a plan for the images."""
    upstream, private = registry_factory(), registry_factory()
    key, other = make_key(), make_key()
    for name, content in images().items():
        repo, tag = name.split(":")
        push_image(upstream.url, repo, tag, content)
        sign_recursive(upstream.url, repo, f"nvcr.io/{repo}", content, key)
    archive = chart_bytes()
    chart = push_oci_chart(upstream.url, CHART_REPO, META, archive)
    sig = sign(upstream.url, CHART_REPO, f"nvcr.io/{CHART_REPO}", chart.digest, key)
    sbom, fallback = sbom_referrer(upstream.url, CHART_REPO, SimpleNamespace(  # type: ignore[arg-type]
        media_type=chart.media_type, digest=chart.digest, size=chart.size), {"spdxVersion": "SPDX-2.3"})
    # an older version signed by someone else
    older = push_oci_chart(upstream.url, CHART_REPO, {**META, "version": "v23.9.1"},
                           chart_bytes(CHART_YAML.replace("v23.9.2", "v23.9.1")))
    sign(upstream.url, CHART_REPO, f"nvcr.io/{CHART_REPO}", older.digest, other)
    plan = tmp_path / "plan.yaml"
    args = ["plan", "--registry", f"{private.host}/{PREFIX}", "--resolve",
            "--source-endpoint", f"nvcr.io=http://{upstream.host}", "-o", str(plan)]
    for ref in images():
        args += ["--image", f"nvcr.io/{ref}"]
    assert cli(*args).exit_code == 0
    return SimpleNamespace(upstream=upstream, private=private, plan=plan, archive=archive, chart=chart,
                           sig=sig, sbom=sbom, fallback=fallback, good=write_public_key(key, tmp_path / "good.pub"),
                           bad=write_public_key(other, tmp_path / "other.pub"))


def test_oci_chart_travels_with_its_signature_and_is_verified(tmp_path: Path, signed: SimpleNamespace) -> None:
    s = signed
    ref = f"oci://nvcr.io/{CHART_REPO}:v23.9.2"
    endpoint = ("--source-endpoint", f"nvcr.io=http://{s.upstream.host}")

    # another key: refused before anything is written, with one line
    refused = tmp_path / "refused.tar"
    res = cli("pull-bundle", str(s.plan), "-o", str(refused), *endpoint, "--chart", ref, "--verify-key", str(s.bad))
    assert res.exit_code == 1, res.output
    assert res.stderr.count("\n") == 1 and "signature verification failed" in res.stderr, res.stderr
    assert ref in res.stderr
    assert not refused.exists() and not list(tmp_path.glob("refused*.yaml"))

    # the images pass under the right key, the chart signed by someone else does not
    res = cli("pull-bundle", str(s.plan), "-o", str(refused), *endpoint, "--chart", ref.replace("v23.9.2", "v23.9.1"),
              "--verify-key", str(s.good))
    assert res.exit_code == 1 and "failed for 1 of 3" in res.stderr and ref.replace("v23.9.2", "v23.9.1") in res.stderr
    assert not refused.exists()

    bundle = tmp_path / "gpu.tar"
    res = cli("pull-bundle", str(s.plan), "-o", str(bundle), *endpoint, "--chart", ref, "--verify-key", str(s.good),
              "--format", "json")
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["charts"] == 1
    assert any(v["subject"] == s.chart.digest for v in rep["verifications"])
    lock = lock_of(bundle)
    [entry] = lock["charts"]
    assert entry["kind"] == "oci" and entry["source"] == ref and entry["digest"] == s.chart.digest
    assert entry["repository"] == f"{s.private.host}/{PREFIX}/charts/gpu-operator"
    chart_arts = {a["digest"] for a in lock["artifacts"] if a["source"] == ref}
    assert chart_arts == {s.sig.digest, s.sbom.digest, s.fallback.digest}   # the referrer's fallback tag index too

    # the far side: --verify-key judges the chart from the bundle alone, then it goes with its signature
    res = cli("push-bundle", str(bundle), "--insecure", s.private.host, "--verify-key", str(s.bad))
    assert res.exit_code == 1 and "gpu-operator" in res.stderr
    res = cli("push-bundle", str(bundle), "--insecure", s.private.host, "--verify-key", str(s.good),
              "--format", "json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["charts_pushed"] == 1 and out["problems"] == []
    repo = f"{PREFIX}/charts/gpu-operator"
    head = httpx.get(f"{s.private.url}/v2/{repo}/manifests/v23.9.2",
                     headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert head.headers["docker-content-digest"] == s.chart.digest and head.content == s.chart.manifest
    sig = httpx.get(f"{s.private.url}/v2/{repo}/manifests/{tag_for(s.chart.digest)}",
                    headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert sig.status_code == 200 and sig.content == s.sig.data
    referrer = httpx.get(f"{s.private.url}/v2/{repo}/manifests/{s.sbom.digest}",
                         headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert referrer.status_code == 200

    # verify --verify-key reads the chart's signature at the mirror, as cosign would
    res = cli("verify", str(bundle), "--insecure", s.private.host, "--verify-key", str(s.good))
    assert res.exit_code == 0 and "3 of 3 image digests carry a valid signature" in res.stderr, res.output
    res = cli("verify", str(bundle), "--insecure", s.private.host, "--verify-key", str(s.bad))
    assert res.exit_code == 1 and f"{s.private.host}/{repo}@{s.chart.digest}" in res.stderr, res.output

    # an OCI artifact client reads it back
    client = oras.client.OrasClient(hostname=s.private.host, insecure=True)
    manifest = client.get_manifest(f"{s.private.host}/{repo}:v23.9.2")
    assert manifest["config"]["mediaType"] == HELM_CONFIG and manifest["layers"][0]["mediaType"] == HELM_CHART
    files = client.pull(target=f"{s.private.host}/{repo}:v23.9.2", outdir=str(tmp_path / "pulled"))
    assert [Path(f).read_bytes() for f in files] == [s.archive]

    # an image is not a chart: bad input, one line, nothing written
    res = cli("pull-bundle", str(s.plan), "-o", str(refused), *endpoint, "--chart",
              "oci://nvcr.io/nvidia/gpu-operator:v23.9.2")
    assert res.exit_code == 2 and "not a Helm chart" in res.stderr and res.stderr.count("\n") == 1, res.output
    assert not refused.exists()

    # a rerun is up to date; plan --chart takes the same form
    res = cli("pull-bundle", str(s.plan), "-o", str(bundle), *endpoint, "--chart", ref, "--format", "json")
    assert res.exit_code == 0 and json.loads(res.stdout)["up_to_date"] is True, res.output
    res = cli("plan", "--chart", ref, *endpoint, "--format", "json")
    assert res.exit_code == 0, res.output
    assert "nvcr.io/nvidia/gpu-operator:v23.9.2" in [i["source"] for i in json.loads(res.stdout)["images"]]


@pytest.fixture
def helm_repo(tmp_path: Path) -> HelmRepository:
    with HelmRepository(tmp_path / "site") as repo:
        repo.add("gpu-operator", "v23.9.2", chart_bytes(), PROV)
        repo.add("gpu-operator", "v23.9.1", chart_bytes(CHART_YAML.replace("v23.9.2", "v23.9.1")))
        yield repo


def test_helm_repository_chart_travels_with_its_provenance(tmp_path: Path, signed: SimpleNamespace,
                                                          helm_repo: HelmRepository) -> None:
    s = signed
    ref = f"{helm_repo.url}/gpu-operator:v23.9.2"
    bundle = tmp_path / "gpu.tar"
    res = cli("pull-bundle", str(s.plan), "-o", str(bundle), "--source-endpoint", f"nvcr.io=http://{s.upstream.host}",
              "--chart", ref, "--chart", f"{helm_repo.url}/gpu-operator:23.9.1", "--format", "json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["charts"] == 2
    entries = {e["version"]: e for e in lock_of(bundle)["charts"]}
    entry = entries["v23.9.2"]
    assert entry["kind"] == "repo" and entry["source"] == f"{helm_repo.url}/charts/gpu-operator-v23.9.2.tgz"
    assert entry["provenance"] == "sha256:" + hashlib.sha256(PROV).hexdigest()
    assert "provenance" not in entries["v23.9.1"]

    res = cli("push-bundle", str(bundle), "--insecure", s.private.host, "--format", "json")
    assert res.exit_code == 0 and json.loads(res.stdout)["charts_pushed"] == 2, res.output
    repo = f"{PREFIX}/charts/gpu-operator"
    manifest = httpx.get(f"{s.private.url}/v2/{repo}/manifests/v23.9.2",
                         headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}).json()
    assert [x["mediaType"] for x in manifest["layers"]] == [HELM_CHART,
                                                            "application/vnd.cncf.helm.chart.provenance.v1.prov"]
    client = oras.client.OrasClient(hostname=s.private.host, insecure=True)
    files = client.pull(target=f"{s.private.host}/{repo}:v23.9.2", outdir=str(tmp_path / "pulled"))
    got = {Path(f).name: Path(f).read_bytes() for f in files}
    assert got == {"gpu-operator-v23.9.2.tgz": chart_bytes(), "gpu-operator-v23.9.2.tgz.prov": PROV}

    res = cli("plan", "--chart", ref, "--format", "json")
    assert res.exit_code == 0, res.output
    assert "nvcr.io/nvidia/gpu-operator:v23.9.2" in [i["source"] for i in json.loads(res.stdout)["images"]]


def simple_plan(tmp_path: Path) -> Path:
    """A plan whose image is never reached: the chart is refused before any image is fetched."""
    plan = tmp_path / "plan.yaml"
    assert cli("plan", "--image", "nvcr.io/nvidia/gpu-operator:v23.9.2", "-o", str(plan)).exit_code == 0
    return plan


def test_tampered_archive_is_refused_with_one_line(tmp_path: Path, helm_repo: HelmRepository) -> None:
    plan = simple_plan(tmp_path)
    rel = "charts/gpu-operator-v23.9.2.tgz"
    (helm_repo.root / "repo" / rel).write_bytes(chart_bytes(CHART_YAML.replace("NVIDIA", "Evil")))
    out = tmp_path / "gpu.tar"
    res = cli("pull-bundle", str(plan), "-o", str(out), "--chart", f"{helm_repo.url}/gpu-operator:v23.9.2")
    assert res.exit_code == 1, res.output
    assert res.stderr.count("\n") == 1 and rel in res.stderr and "sha256 is" in res.stderr, res.stderr
    assert not out.exists() and not list(tmp_path.glob("gpu*.yaml"))
    res = cli("pull-bundle", str(plan), "-o", str(out), "--chart", f"{helm_repo.url}/gpu-operator:v9.9.9")
    assert res.exit_code == 1 and "no version v9.9.9" in res.stderr and not out.exists()


def test_malformed_chart_references_are_bad_input(tmp_path: Path) -> None:
    plan = simple_plan(tmp_path)
    for text, message in (("oci://nvcr.io/nvidia/gpu-operator", "give the chart's version"),
                          ("https://user:pw@example.com/repo/gpu-operator:1.0.0", "credentials do not belong"),
                          ("ftp://example.com/x:1.0.0", "only oci://"),
                          ("https://example.com/repo/gpu-operator:latest", "not a SemVer version")):
        res = cli("pull-bundle", str(plan), "-o", str(tmp_path / "x.tar"), "--chart", text)
        assert res.exit_code == 2 and message in res.stderr and "pw" not in res.stderr, (text, res.stderr)


def test_download_resumes_with_range_after_a_cut(tmp_path: Path, helm_repo: HelmRepository) -> None:
    rel = "/repo/charts/gpu-operator-v23.9.2.tgz"
    data = chart_bytes()
    helm_repo.served.cut_once.add(rel)
    helm_repo.served.busy_once.add("/repo/index.yaml")
    with HttpFiles() as files:
        index = yaml.safe_load(files.fetch_bytes(helm_repo.url + "/index.yaml"))     # a 503, then the file
        assert [p for p, _ in helm_repo.served.requests] == ["/repo/index.yaml"] * 2
        assert index["entries"]["gpu-operator"][1]["version"] == "v23.9.2"
        got = files.download(helm_repo.url + rel.removeprefix("/repo"), tmp_path / "c.tgz",
                             sha256=hashlib.sha256(data).hexdigest())
    assert got == hashlib.sha256(data).hexdigest() and (tmp_path / "c.tgz").read_bytes() == data
    ranges = [r for p, r in helm_repo.served.requests if p == rel]
    assert ranges[0] is None and ranges[1] is not None and ranges[1].startswith("bytes=") and ranges[1] != "bytes=0-"
    assert not (tmp_path / "c.tgz.partial").exists()


def test_helm_repository_over_tls_with_credentials_from_the_auth_file(tmp_path: Path) -> None:
    """The registries' rules apply: TLS verified (--ca-cert), credentials from the auth file, only to that host."""
    ca = make_ca(tmp_path / "pki")
    with HelmRepository(tmp_path / "site", tls=ca.server_context(), user=("robot", "s3cret-pw")) as repo:
        repo.add("gpu-operator", "v23.9.2", chart_bytes())
        host = repo.url.split("/")[2]
        auth = tmp_path / "auth.json"
        auth.write_text(json.dumps({"auths": {host: {"auth": base64.b64encode(b"robot:s3cret-pw").decode()}}}))
        ref = f"{repo.url}/gpu-operator:v23.9.2"
        env = {"REGISTRY_AUTH_FILE": str(auth)}
        res = CliRunner(env=env).invoke(main, ["plan", "--chart", ref, "--ca-cert", str(ca.ca_cert),
                                               "--format", "json"])
        assert res.exit_code == 0, res.output
        assert "nvcr.io/nvidia/gpu-operator:v23.9.2" in [i["source"] for i in json.loads(res.stdout)["images"]]
        res = CliRunner(env=env).invoke(main, ["plan", "--chart", ref])            # the CA not trusted
        assert res.exit_code == 1 and "TLS verification failed" in res.stderr and "--ca-cert" in res.stderr
        res = CliRunner(env={"REGISTRY_AUTH_FILE": str(tmp_path / "none.json")}).invoke(
            main, ["plan", "--chart", ref, "--ca-cert", str(ca.ca_cert)])
        assert res.exit_code == 1 and "access denied (HTTP 401)" in res.stderr, res.output
        assert "s3cret" not in res.output
