"""Reading user files safely: one-line errors that name the file and line, and a size cap.

Every YAML or JSON file mirrorkit reads comes through here, so a malformed or
oversized file is refused the same way everywhere (exit 2, no traceback).
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import yaml

from mirrorkit.errors import InputError

MAX_INPUT_BYTES = 4 * 1024 * 1024
# kubectl's node lists are JSON and big on big clusters; JSON parses fast, YAML does not
MAX_JSON_BYTES = 64 * 1024 * 1024
# libyaml's loader when the wheel has it: locks of big bundles parse several times faster
SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_text(path: str | Path, what: str = "file", limit: int | None = None) -> str:
    """A regular file's text, refused when it is too big, not a file (a FIFO would hang) or not UTF-8."""
    p = Path(path)
    limit = limit or MAX_INPUT_BYTES
    try:
        st = p.stat()
        if stat.S_ISDIR(st.st_mode):
            raise InputError(f"{p}: {what} is a directory, expected a file")
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{p}: {what} is not a regular file")
        if st.st_size > limit:
            raise InputError(f"{p}: {what} is {st.st_size} bytes, larger than the {limit} byte limit")
        with p.open("rb") as fh:
            data = fh.read(limit + 1)
    except FileNotFoundError:
        raise InputError(f"{p}: {what} not found") from None
    except OSError as exc:
        raise InputError(f"{p}: cannot read {what}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise InputError(f"{p}: {what} is larger than the {limit} byte limit")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{p}: {what} is not UTF-8 text (byte {exc.start})") from None


def parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=SafeLoader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"{source}{where}: malformed YAML: {problem}") from None


def load_yaml(path: str | Path, what: str = "YAML file") -> Any:
    return parse_yaml(read_text(path, what), str(path))


def load_json(path: str | Path, what: str = "JSON file") -> Any:
    text = read_text(path, what, MAX_JSON_BYTES)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{exc.lineno}: malformed JSON: {exc.msg}") from None


def load_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """A YAML (or JSON, which is YAML) file whose top level must be a mapping; empty is {}."""
    data = load_yaml(path, what)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"{path}: {what} must be a mapping at the top level, got {type(data).__name__}")
    return data


def dig(data: Any, path: str, default: Any = None) -> Any:
    """Value at a dotted values path (``driver.manager.version``), or default."""
    node = data
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    return node
