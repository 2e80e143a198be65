"""Edit a user's values file in place: comments, order and layout stay; only image fields change.

Administrators keep their values files under review, with comments that explain
why a setting is what it is. Re-serialising the merged values would drop every
comment and reorder nothing but still produce a diff of the whole file. Instead
each changed leaf is written into the original text at the position the YAML
parser reports for it: an existing scalar is replaced where it stands, a missing
key is added after its siblings with their indentation, a missing section is
added as a small block. The result is parsed again and must equal the merged
values exactly; when the file's shape is beyond this (flow style, anchors that
tie two settings together, several documents), the caller falls back to writing
the merged values afresh.
"""

from __future__ import annotations

from typing import Any

import yaml

from mirrorkit.errors import InputError
from mirrorkit.yamlio import SafeLoader, parse_yaml

KeyPath = tuple[str, ...]


def leaf_changes(before: Any, after: Any, prefix: KeyPath = ()) -> list[tuple[KeyPath, Any]]:
    """Every leaf of ``after`` that is new or different from ``before``, in ``after``'s order."""
    out: list[tuple[KeyPath, Any]] = []
    for key, value in after.items():
        here = (*prefix, str(key))
        old = before.get(key) if isinstance(before, dict) else None
        if isinstance(value, dict) and value and (old is None or isinstance(old, dict)):
            out.extend(leaf_changes(old or {}, value, here))
        elif not isinstance(before, dict) or key not in before or old != value:
            out.append((here, value))
    return out


def edit_values(text: str, changes: list[tuple[KeyPath, Any]], expected: dict[str, Any]) -> str | None:
    """``text`` with every change applied, or None when it cannot be done faithfully."""
    for path, value in changes:
        try:
            edited = _apply(text, path, value)
        except (yaml.YAMLError, InputError):
            return None
        if edited is None:
            return None
        text = edited
    try:
        result = parse_yaml(text, "edited values")
    except InputError:
        return None
    return text if result == expected else None


def _apply(text: str, path: KeyPath, value: Any) -> str | None:
    root = yaml.compose(text, Loader=SafeLoader)  # noqa: S506 - a safe loader, composing only
    if root is None or not isinstance(root, yaml.MappingNode) or root.flow_style:
        return None
    lines = text.splitlines(keepends=True)
    node: yaml.MappingNode = root
    for depth, key in enumerate(path):
        pair = next(((k, v) for k, v in node.value
                     if isinstance(k, yaml.ScalarNode) and k.value == key), None)
        if pair is None:
            return _insert(lines, node, path[depth:], value)
        key_node, value_node = pair
        if depth == len(path) - 1:
            return _replace(lines, key_node, value_node, value)
        if not isinstance(value_node, yaml.MappingNode) or value_node.flow_style or not value_node.value:
            return None                      # `driver: {}` or `driver:` with nothing: leave it to a rewrite
        node = value_node
    return None


def _scalar(value: Any) -> str | None:
    """One-line YAML for a scalar, quoted where it must be; None for anything else."""
    if isinstance(value, dict | list):
        return None
    dumped = yaml.safe_dump(value, default_flow_style=True, width=10_000)
    dumped = dumped.removesuffix("\n").removesuffix("\n...")
    return None if "\n" in dumped else dumped


def _replace(lines: list[str], key_node: yaml.Node, value_node: yaml.Node, value: Any) -> str | None:
    new = _scalar(value)
    start, end = value_node.start_mark, value_node.end_mark
    if new is None or not isinstance(value_node, yaml.ScalarNode) or start.line != end.line \
            or start.line != key_node.start_mark.line or value_node.style in ("|", ">"):
        return None                          # block scalars, values on their own line: not edited in place
    line = lines[start.line]
    lines[start.line] = line[:start.column] + new + line[end.column:]
    return "".join(lines)


def _insert(lines: list[str], parent: yaml.MappingNode, rest: KeyPath, value: Any) -> str | None:
    """Add ``rest: value`` (nested as needed) after the last entry of a block mapping."""
    if parent.flow_style or not parent.value:
        return None
    indent = parent.value[0][0].start_mark.column
    step = _step(parent)
    nested: Any = value
    for key in reversed(rest):
        nested = {key: nested}
    block = yaml.safe_dump(nested, default_flow_style=False, sort_keys=False, indent=step, width=10_000)
    new_lines = [" " * indent + line + "\n" for line in block.splitlines()]
    at = min(_last_line(parent) + 1, len(lines))
    if at == len(lines) and lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    lines[at:at] = new_lines
    return "".join(lines)


def _last_line(node: yaml.Node) -> int:
    """The last line holding the node's own content. A block collection's end mark lies at the
    next token, possibly lines further on, past comments that belong to the next section."""
    while isinstance(node, yaml.MappingNode | yaml.SequenceNode) and node.value:
        last = node.value[-1]
        node = last[1] if isinstance(node, yaml.MappingNode) else last
    end = node.end_mark
    return end.line if end.column > 0 or end.line == node.start_mark.line else end.line - 1


def _step(parent: yaml.MappingNode) -> int:
    """The file's own indentation step, read from the first nested block mapping found (else 2)."""
    for _, value in parent.value:
        if isinstance(value, yaml.MappingNode) and not value.flow_style and value.value:
            inner = value.value[0][0].start_mark.column - parent.value[0][0].start_mark.column
            if inner > 0:
                return inner
    return 2
