"""Plans and locks name only keys mirrorkit knows: a typo must not silently drop a setting.

``digset:`` instead of ``digest:`` once dropped an image's digest pin without a word (and
with it the validator's entry in an IDMS). Every level of a plan and a lock has its list
of allowed keys beside its reader (``plan.PLAN_KEYS``, ``lock.LOCK_KEYS`` ...); a key not
on it is refused with the file, the line and the nearest valid key.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

import yaml

from mirrorkit.errors import InputError
from mirrorkit.yamlio import SafeLoader

Path_ = tuple[str | int, ...]


class UnknownKeyError(InputError):
    """An unknown key; ``path`` leads to it from the document's root (keys and list indexes)."""

    def __init__(self, where: str, detail: str, path: Path_) -> None:
        super().__init__(f"{where}: {detail}")
        self.where, self.detail, self.path = where, detail, path

    def within(self, prefix: Path_) -> UnknownKeyError:
        return UnknownKeyError(self.where, self.detail, prefix + self.path)


def check_keys(data: dict[str, Any], allowed: Iterable[str], where: str, path: Path_ = ()) -> None:
    known = sorted(set(allowed))
    for key in data:
        if key in known:
            continue
        name = str(key)
        near = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f"; did you mean {near[0]!r}?" if near else f" (known: {', '.join(known)})"
        raise UnknownKeyError(where, f"unknown key {name!r}{hint}", (*path, name))


def key_line(text: str, path: Path_) -> int | None:
    """The 1-based line of the key at ``path`` in the YAML ``text`` (None when it cannot be found)."""
    try:
        node = yaml.compose(text, Loader=SafeLoader)  # noqa: S506 - a safe loader, composing only
    except yaml.YAMLError:
        return None
    line = None
    for step in path:
        if isinstance(step, int) and isinstance(node, yaml.SequenceNode) and step < len(node.value):
            node = node.value[step]
            line = node.start_mark.line + 1
        elif isinstance(step, str) and isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == step:
                    line, node = key.start_mark.line + 1, value
                    break
            else:
                return None
        else:
            return None
    return line


def located(exc: UnknownKeyError, text: str, file: str) -> InputError:
    """The error again, as ``FILE:LINE: ...`` when the line can be found."""
    line = key_line(text, exc.path)
    if line is None:
        return InputError(str(exc))
    where = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in exc.path[:-1]).replace(".[", "[")
    return InputError(f"{file}:{line}: {where + ': ' if where else ''}{exc.detail}")
