"""A hand-written JSON-schema subset of Kyverno's ClusterPolicy CRD (``kyverno.io/v1``), per release.

Facts, not copies: for each release the property names, ``required`` lists and types below
were read from ``config/crds/[kyverno/]kyverno.io_clusterpolicies.yaml`` at the tags
v1.10.7, v1.11.5, v1.12.7, v1.13.6, v1.14.5, v1.15.3, v1.16.4, v1.17.2, v1.18.2 and v1.19.0
of kyverno/kyverno. Only the paths a verify-images policy uses are kept: the top level,
``spec`` (background, validationFailureAction, webhookTimeoutSeconds, rules), a rule's
``name``/``match``/``verifyImages``, ``match.any[].resources.kinds``, a verifyImages entry,
``attestors[].count/entries``, an entry's ``keys``, and ``keys.rekor``/``keys.ctlog``.
Each object is closed (``additionalProperties: false``), as ``kubectl apply`` (strict field
validation, the default since Kubernetes 1.27) treats an unknown field. 1.13 to 1.19 do not
differ on these paths.
"""

from __future__ import annotations

from typing import Any

_SPEC_110 = ["applyRules", "background", "failurePolicy", "generateExisting", "generateExistingOnPolicyUpdate",
             "mutateExistingOnPolicyUpdate", "rules", "schemaValidation", "validationFailureAction",
             "validationFailureActionOverrides", "webhookTimeoutSeconds"]
_RULE_110 = ["context", "exclude", "generate", "imageExtractors", "match", "mutate", "name", "preconditions",
             "validate", "verifyImages"]
_VI_110 = ["additionalExtensions", "annotations", "attestations", "attestors", "image", "imageReferences", "issuer",
           "key", "mutateDigest", "repository", "required", "roots", "subject", "type", "verifyDigest"]
_ENTRY_110 = ["annotations", "attestor", "certificates", "keyless", "keys", "repository"]

# release family -> the facts that differ (each later family lists what it adds)
FAMILIES: dict[str, dict[str, Any]] = {
    "1.10": {"spec": _SPEC_110, "rule": _RULE_110, "rule_required": ["name"], "vi": _VI_110,
             "type": ["Cosign", "Notary"], "entry": _ENTRY_110,
             "keys": ["kms", "publicKeys", "rekor", "secret", "signatureAlgorithm"],
             "rekor": ["url"], "rekor_required": ["url"], "ctlog": None},
    "1.11": {"spec": [*_SPEC_110, "admission", "useServerSideApply"],
             "rule": [*_RULE_110, "celPreconditions", "skipBackgroundRequests"], "rule_required": ["name"],
             "vi": [*_VI_110, "imageRegistryCredentials", "useCache"], "type": ["Cosign", "Notary"],
             "entry": _ENTRY_110, "keys": ["ctlog", "kms", "publicKeys", "rekor", "secret", "signatureAlgorithm"],
             "rekor": ["ignoreTlog", "pubkey", "url"], "rekor_required": ["url"], "ctlog": ["ignoreSCT", "pubkey"]},
    "1.12": {"spec": [*_SPEC_110, "admission", "useServerSideApply", "webhookConfiguration"],
             "rule": [*_RULE_110, "celPreconditions", "skipBackgroundRequests"], "rule_required": ["name"],
             "vi": [*_VI_110, "imageRegistryCredentials", "useCache", "skipImageReferences"],
             "type": ["Cosign", "Notary"], "entry": _ENTRY_110,
             "keys": ["ctlog", "kms", "publicKeys", "rekor", "secret", "signatureAlgorithm"],
             "rekor": ["ignoreTlog", "pubkey", "url"], "rekor_required": [], "ctlog": ["ignoreSCT", "pubkey"]},
    "1.13": {"spec": [*_SPEC_110, "admission", "useServerSideApply", "webhookConfiguration", "emitWarning"],
             "rule": [*_RULE_110, "celPreconditions", "skipBackgroundRequests", "reportProperties"],
             "rule_required": ["match", "name"],
             "vi": [*_VI_110, "imageRegistryCredentials", "useCache", "skipImageReferences", "cosignOCI11",
                    "failureAction", "validate"],
             "type": ["Cosign", "SigstoreBundle", "Notary"], "entry": [*_ENTRY_110, "signatureAlgorithm"],
             "keys": ["ctlog", "kms", "publicKeys", "rekor", "secret", "signatureAlgorithm"],
             "rekor": ["ignoreTlog", "pubkey", "url"], "rekor_required": [],
             "ctlog": ["ignoreSCT", "pubkey", "tsaCertChain"]},
}
VERSIONS = {"1.10": "1.10", "1.11": "1.11", "1.12": "1.12", **{f"1.{n}": "1.13" for n in range(13, 20)}}

_ANY_OBJECT: dict[str, Any] = {"type": "object"}
_STRING: dict[str, Any] = {"type": "string"}
_BOOL: dict[str, Any] = {"type": "boolean"}


def _closed(names: list[str], known: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    """An object with exactly these property names; those not described further accept anything."""
    out: dict[str, Any] = {"type": "object", "properties": {n: known.get(n, {}) for n in names},
                           "additionalProperties": False}
    if required:
        out["required"] = required
    return out


def schema(version: str) -> dict[str, Any]:
    """The ClusterPolicy subset for Kyverno ``version`` (``1.10`` … ``1.19``)."""
    f = FAMILIES[VERSIONS[version]]
    keys_known: dict[str, Any] = {"publicKeys": _STRING, "signatureAlgorithm": _STRING,
                                  "rekor": _closed(f["rekor"], {"url": _STRING, "ignoreTlog": _BOOL,
                                                                "pubkey": _STRING}, f["rekor_required"])}
    if f["ctlog"] is not None:
        keys_known["ctlog"] = _closed(f["ctlog"], {"ignoreSCT": _BOOL, "pubkey": _STRING})
    entry = _closed(f["entry"], {"keys": _closed(f["keys"], keys_known)})
    attestor = _closed(["count", "entries"], {"count": {"type": "integer", "minimum": 1},
                                              "entries": {"type": "array", "items": entry}})
    verify = _closed(f["vi"], {"type": {"type": "string", "enum": f["type"]},
                               "imageReferences": {"type": "array", "items": _STRING},
                               "mutateDigest": _BOOL, "verifyDigest": _BOOL, "required": _BOOL,
                               "attestors": {"type": "array", "items": attestor}})
    resources = _closed(["annotations", "kinds", "name", "names", "namespaceSelector", "namespaces", "operations",
                         "selector"], {"kinds": {"type": "array", "items": _STRING}})
    match = _closed(["all", "any", "clusterRoles", "resources", "roles", "subjects"], {
        "any": {"type": "array", "items": _closed(["clusterRoles", "resources", "roles", "subjects"],
                                                  {"resources": resources})}})
    rule = _closed(f["rule"], {"name": _STRING, "match": match, "verifyImages": {"type": "array", "items": verify}},
                   f["rule_required"])
    spec = _closed(f["spec"], {"background": _BOOL, "webhookTimeoutSeconds": {"type": "integer"},
                               "validationFailureAction": {"type": "string",
                                                           "enum": ["audit", "enforce", "Audit", "Enforce"]},
                               "rules": {"type": "array", "items": rule}})
    return _closed(["apiVersion", "kind", "metadata", "spec", "status"],
                   {"apiVersion": _STRING, "kind": _STRING, "metadata": _ANY_OBJECT, "spec": spec}, ["spec"])
