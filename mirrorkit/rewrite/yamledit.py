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
    """``text`` with every change applied, or None when it cannot be done faithfully.

    The text is parsed once; replacements and insertions are planned against that one
    tree and applied from the bottom of the file up, so no edit moves another's place.
    """
    try:
        root = yaml.compose(text, Loader=SafeLoader)  # noqa: S506 - a safe loader, composing only
    except yaml.YAMLError:
        return None
    if not isinstance(root, yaml.MappingNode) or root.flow_style or not root.value:
        return None
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    replacements: list[tuple[int, int, int, str]] = []        # line, start column, end column, new text
    additions: dict[int, tuple[yaml.MappingNode, dict[str, Any]]] = {}   # per existing mapping: what it gains
    for path, value in changes:
        node = root
        for depth, key in enumerate(path):
            pair = next(((k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == key), None)
            if pair is None:
                _nest(additions.setdefault(id(node), (node, {}))[1], path[depth:], value)
                break
            key_node, value_node = pair
            if depth == len(path) - 1:
                edit = _replacement(key_node, value_node, value)
                if edit is None:
                    return None
                replacements.append(edit)
                break
            if not isinstance(value_node, yaml.MappingNode) or value_node.flow_style or not value_node.value:
                return None                  # `driver: {}` or `driver:` with nothing: leave it to a rewrite
            node = value_node
    for line, start, end, new in replacements:
        lines[line] = lines[line][:start] + new + lines[line][end:]
    # deepest mapping last at equal places: its lines then sit directly under its own content
    inserts = sorted(((min(_last_line(n) + 1, len(lines)), n.value[0][0].start_mark.column, n, tree)
                      for n, tree in additions.values()), key=lambda t: (-t[0], t[1]))
    for at, indent, parent, tree in inserts:
        block = yaml.safe_dump(tree, default_flow_style=False, sort_keys=False, indent=_step(parent), width=10_000)
        lines[at:at] = [" " * indent + line + "\n" for line in block.splitlines()]
    edited = "".join(lines)
    try:
        result = parse_yaml(edited, "edited values")
    except InputError:
        return None
    return edited if result == expected else None


def _nest(tree: dict[str, Any], path: KeyPath, value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _scalar(value: Any) -> str | None:
    """One-line YAML for a scalar, quoted where it must be; None for anything else."""
    if isinstance(value, dict | list):
        return None
    dumped = yaml.safe_dump(value, default_flow_style=True, width=10_000)
    dumped = dumped.removesuffix("\n").removesuffix("\n...")
    return None if "\n" in dumped else dumped


def _replacement(key_node: yaml.Node, value_node: yaml.Node, value: Any) -> tuple[int, int, int, str] | None:
    """Where and what to write for a scalar edited where it stands; None when that cannot be done."""
    new = _scalar(value)
    start, end = value_node.start_mark, value_node.end_mark
    if new is None or not isinstance(value_node, yaml.ScalarNode) or start.line != end.line \
            or start.line != key_node.start_mark.line or value_node.style in ("|", ">"):
        return None                          # block scalars, values on their own line: not edited in place
    return start.line, start.column, end.column, new


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
