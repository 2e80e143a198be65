"""Reading user files safely: one-line errors that name the file and line, and a size cap.

Every YAML or JSON file mirrorkit reads comes through here, so a malformed or
oversized file is refused the same way everywhere (exit 2, no traceback).
"""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from mirrorkit.errors import InputError

MAX_INPUT_BYTES = 4 * 1024 * 1024
# kubectl's node lists are JSON and big on big clusters; JSON parses fast, YAML does not
MAX_JSON_BYTES = 64 * 1024 * 1024
MERGE_TAG = "tag:yaml.org,2002:merge"
BOM = "\ufeff"


class SafeLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """libyaml's safe loader (locks of big bundles parse several times faster) that sees
    duplicate keys. PyYAML keeps the last one silently; for mirrorkit's own files (plans,
    locks, configs) that is ambiguity we refuse. Helm accepts a values file with duplicates
    (last wins), so there they are only recorded in ``duplicates`` for a warning."""

    duplicates: list[str] | None = None      # a list: record and go on; None: refuse

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != MERGE_TAG:
                key = (key_node.tag, key_node.value)
                if key in seen:
                    if self.duplicates is None:
                        raise yaml.constructor.ConstructorError(
                            "while constructing a mapping", node.start_mark,
                            f"duplicate key {key_node.value!r}", key_node.start_mark)
                    self.duplicates.append(f"line {key_node.start_mark.line + 1}: duplicate key "
                                           f"{key_node.value!r}")
                seen.add(key)
        return super().construct_mapping(node, deep)


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
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{p}: {what} is not UTF-8 text (byte {exc.start})") from None
    # Windows editors save a UTF-8 BOM; left in, it becomes part of the first key ('\ufeffdriver')
    return text.removeprefix(BOM)


def malformed(exc: yaml.YAMLError, source: str) -> InputError:
    """A YAML parser's error as one line naming the file and, when the parser knows it, the line."""
    mark = getattr(exc, "problem_mark", None)
    at = f":{mark.line + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return InputError(f"{source}{at}: malformed YAML: {problem}")


def parse_yaml(text: str, source: str, duplicates: list[str] | None = None) -> Any:
    """YAML from a user's file. With ``duplicates`` (a list), a repeated key is noted there as a
    warning and the last one wins, as in Helm; without, it is refused."""
    loader = SafeLoader(text.removeprefix(BOM))
    if duplicates is not None:
        loader.duplicates = []
    try:
        data = loader.get_single_data()
        if duplicates is not None and loader.duplicates:
            duplicates.extend(f"{source}: {d} (the last one wins, as in Helm)" for d in loader.duplicates)
        return data
    except yaml.YAMLError as exc:
        raise malformed(exc, source) from None
    finally:
        loader.dispose()


class LinedDict(dict[Any, Any]):
    """A mapping that remembers the 1-based line of each of its keys (``lines``)."""

    lines: dict[Any, int]


def line_of(data: Any, key: str) -> int | None:
    """The line ``key`` is on in a mapping read with ``documents(..., lines=True)``."""
    return data.lines.get(key) if isinstance(data, LinedDict) else None


class LineLoader(SafeLoader):
    """SafeLoader whose mappings are LinedDicts: an error can name the very line of a value."""


def _lined_map(loader: LineLoader, node: yaml.MappingNode) -> Iterator[LinedDict]:
    data = LinedDict()
    data.lines = {k.value: k.start_mark.line + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)}
    yield data
    data.update(loader.construct_mapping(node))


LineLoader.add_constructor("tag:yaml.org,2002:map", _lined_map)


def documents(text: str, source: str, lines: bool = False) -> list[tuple[dict[str, Any], str]]:
    """Every object of a multi-document Kubernetes YAML (``kind: List`` unpacked), each with
    ``FILE:LINE`` of where it starts, so an error in one names it. With ``lines`` every mapping
    also knows the line of each key (``line_of``)."""
    out: list[tuple[dict[str, Any], str]] = []
    loader = (LineLoader if lines else SafeLoader)(text.removeprefix(BOM))
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            where = f"{source}:{node.start_mark.line + 1}"
            data = loader.construct_document(node)
            if data is None:
                continue
            if not isinstance(data, dict):
                raise InputError(f"{where}: expected a Kubernetes object, got {type(data).__name__}")
            if str(data.get("kind", "")).endswith("List") and isinstance(data.get("items"), list):
                out.extend((i, where) for i in data["items"] if isinstance(i, dict))
            else:
                out.append((data, where))
    except yaml.YAMLError as exc:
        raise malformed(exc, source) from None
    finally:
        loader.dispose()
    return out


def load_json(path: str | Path, what: str = "JSON file") -> Any:
    text = read_text(path, what, MAX_JSON_BYTES)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{exc.lineno}: malformed JSON: {exc.msg}") from None


def load_mapping(path: str | Path, what: str, duplicates: list[str] | None = None) -> dict[str, Any]:
    """A YAML (or JSON, which is YAML) file whose top level must be a mapping; empty is {}."""
    return parse_mapping(read_text(path, what), str(path), what, duplicates)


def parse_mapping(text: str, source: str, what: str, duplicates: list[str] | None = None) -> dict[str, Any]:
    """``load_mapping`` for text already read (a caller that also edits that text)."""
    data = parse_yaml(text, source, duplicates)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"{source}: {what} must be a mapping at the top level, got {type(data).__name__}")
    return data


def line_ending(text: str) -> str:
    """The file's own line end: CRLF when its first line ends so (saved on Windows), else LF."""
    first = text.find("\n")
    return "\r\n" if first > 0 and text[first - 1] == "\r" else "\n"


def dig(data: Any, path: str, default: Any = None) -> Any:
    """Value at a dotted values path (``driver.manager.version``), or default."""
    node = data
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    return node
