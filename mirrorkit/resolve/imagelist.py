"""``--image-list FILE``: extra images a site needs, one reference per line or YAML.

Accepted forms: plain text (one reference per line, ``#`` comments, blank lines
ignored); a YAML list of references; or a YAML mapping with ``images:`` whose
entries are references or ``{ref: ..., reason: ...}``. An entry may also be a
local image, ``docker-archive:driver.tar=nvcr.io/nvidia/driver:TAG`` (see
mirrorkit.plan.split_image_arg; relative paths are taken from the list's folder).
"""

from __future__ import annotations

from pathlib import Path

from mirrorkit.errors import InputError
from mirrorkit.plan import is_local_source, split_image_arg
from mirrorkit.refs import Ref
from mirrorkit.yamlio import parse_yaml, read_text


def _entry(item: object, where: str, base: Path | None = None) -> tuple[str, str]:
    if isinstance(item, str):
        ref, reason = item, ""
    elif isinstance(item, dict) and isinstance(item.get("ref"), str):
        ref, reason = item["ref"], str(item.get("reason") or "")
    else:
        raise InputError(f"{where}: expected an image reference or {{ref: ..., reason: ...}}")
    if is_local_source(ref.strip()):
        name, local = split_image_arg(ref, where, base)
        return f"{local}={name}", reason
    try:
        Ref.parse(ref)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None
    return ref.strip(), reason


def load_image_list(path: str | Path) -> list[tuple[str, str]]:
    text = read_text(path, "image list")
    name = str(path)
    stripped = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    looks_yaml = any(ln.lstrip().startswith("- ") or ln.rstrip().endswith(":") for ln in stripped)
    out: list[tuple[str, str]] = []
    if looks_yaml or Path(name).suffix in (".yaml", ".yml"):
        data = parse_yaml(text, name)
        if isinstance(data, dict):
            data = data.get("images")
        if not isinstance(data, list):
            raise InputError(f"{name}: expected a list of images (or a mapping with 'images:')")
        for n, item in enumerate(data):
            ref, reason = _entry(item, f"{name}: images[{n}]", Path(name).parent)
            out.append((ref, reason or f"listed in {Path(name).name}"))
        return out
    for lineno, line in enumerate(text.splitlines(), 1):
        body = line.split("#", 1)[0].strip()
        if body:
            ref, _ = _entry(body, f"{name}:{lineno}", Path(name).parent)
            out.append((ref, f"listed in {Path(name).name}"))
    return out
