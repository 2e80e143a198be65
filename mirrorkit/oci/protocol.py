"""The distribution protocol's small print: Retry-After, auth challenges, token scopes, error bodies.

Pure functions over headers and bodies, kept apart from the client that sends the
requests so each can be read (and tested) on its own.
"""

from __future__ import annotations

import datetime
import email.utils
import json
import time

import httpx

RETRY_AFTER_CAP = 30.0


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or HTTP date), capped."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # not str.isdigit alone: '²' is a digit float() refuses
        return min(float(value), RETRY_AFTER_CAP)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:  # asctime form (and "-0000") carry no zone; HTTP dates are always GMT
        when = when.replace(tzinfo=datetime.UTC)
    delay = when.timestamp() - (now if now is not None else time.time())
    return min(max(delay, 0.0), RETRY_AFTER_CAP)


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="…",service="…",scope="…"`` -> ("bearer", {...})."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    i, n = 0, len(rest)
    while i < n:
        while i < n and rest[i] in " ,":
            i += 1
        eq = rest.find("=", i)
        if eq < 0:
            break
        key = rest[i:eq].strip().lower()
        i = eq + 1
        if i < n and rest[i] == '"':
            end = rest.find('"', i + 1)
            end = n if end < 0 else end
            params[key] = rest[i + 1:end]
            i = end + 1
        else:
            end = rest.find(",", i)
            end = n if end < 0 else end
            params[key] = rest[i:end].strip()
            i = end
    return scheme.lower(), params


def scope_repository(scope: str) -> str | None:
    """The repository a token scope is for (the first one named): credentials are per namespace."""
    for part in scope.split():
        kind, _, rest = part.partition(":")
        if kind == "repository" and ":" in rest:
            return rest.rsplit(":", 1)[0]
    return None


MAX_ERROR_TEXT = 200
MAX_ERROR_BODY = 65536


def read_error_body(resp: httpx.Response, stream: bool) -> bytes:
    """At most ``MAX_ERROR_BODY`` bytes of an error answer (a streamed one is read only that far)."""
    if not stream:
        return resp.read()[:MAX_ERROR_BODY]
    data = b""
    try:
        for chunk in resp.iter_bytes():
            data += chunk
            if len(data) >= MAX_ERROR_BODY:
                break
    except httpx.HTTPError:
        pass  # the status says enough; the body was a courtesy
    return data[:MAX_ERROR_BODY]


def registry_errors(body: bytes) -> list[tuple[str, str]]:
    """``(code, message)`` pairs from a distribution error body (``{"errors": [...]}``), else []."""
    try:
        doc = json.loads(body)
    except ValueError:
        return []
    items = doc.get("errors") if isinstance(doc, dict) else None
    out = []
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and isinstance(item.get("code"), str):
            message = item.get("message")
            # a registry's words reach a terminal: no control characters, bounded length
            text = "".join(c for c in " ".join(message.split()) if c.isprintable())[:MAX_ERROR_TEXT] \
                if isinstance(message, str) else ""
            out.append(("".join(c for c in item["code"] if c.isalnum() or c == "_")[:64], text))
    return out


def first_error_code(body: bytes) -> str | None:
    errors = registry_errors(body)
    return errors[0][0] if errors else None


def error_detail(body: bytes) -> str:
    """``: NAME_INVALID: invalid repository name``: the registry's own words, for the user."""
    errors = registry_errors(body)
    return "".join(f": {code}" + (f": {msg}" if msg else "") for code, msg in errors[:3])
