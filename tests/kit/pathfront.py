"""Registry fronts with the path rules of real products, before a real ``docker-registry``.

``docker-registry`` accepts any repository path, which hides the refusals users
meet in production. ``PathRulesFront`` forwards everything else to the registry
(it is a ``tokenauth.ReverseProxy``) and answers the distribution error body a
real product sends:

* ``max_depth=2``: a repository deeper than two path segments is refused on every
  request with ``400 NAME_INVALID``, as Quay does (``org/repo`` only);
* ``projects={"gpu"}``: a repository whose first segment is not an existing project
  is refused with ``404 NAME_UNKNOWN`` ("project kse not found"), as Harbor does.

Each refusal is recorded in ``refused`` (method, repository, code).

    with RegistryServer() as reg, PathRulesFront(reg.url, max_depth=2) as quay:
        ...  # push to quay.host
"""

from __future__ import annotations

import json
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any

from kit.tokenauth import ReverseProxy

NAME = re.compile(r"^/v2/(?P<name>.+?)/(?:manifests|blobs|tags)/")


@dataclass(frozen=True)
class Refusal:
    method: str
    repository: str
    code: str


class PathRulesFront(ReverseProxy):
    def __init__(self, upstream: str, *, max_depth: int | None = None, projects: set[str] | None = None) -> None:
        super().__init__(upstream)
        self.max_depth = max_depth
        self.projects = projects
        self.refused: list[Refusal] = []

    def rule(self, repository: str) -> tuple[int, str, str] | None:
        """(status, code, message) for a refused repository; None when the product would accept it."""
        parts = repository.split("/")
        if self.max_depth is not None and len(parts) > self.max_depth:
            return 400, "NAME_INVALID", f"invalid repository name: at most {self.max_depth} path components"
        if self.projects is not None and parts[0] not in self.projects:
            return 404, "NAME_UNKNOWN", f"project {parts[0]} not found"
        return None

    def _handle(self, h: Any) -> None:  # the kit's request handler
        body = h.read_body()
        match = NAME.match(urllib.parse.urlsplit(h.path).path)
        refusal = self.rule(match.group("name")) if match else None
        if refusal is None:
            status = self._forward(h, body)
        else:
            status, code, message = refusal
            doc = {"errors": [{"code": code, "message": message, "detail": None}]}
            h.reply(status, json.dumps(doc).encode(), [("Content-Type", "application/json; charset=utf-8")])
            with self._lock:
                self.refused.append(Refusal(h.command, match.group("name") if match else "", code))
        self._record(h, status)
