"""Values inside ``#`` comments of the files rewrite writes (TOML, YAML, shell, Markdown)."""

from __future__ import annotations


def inert(value: object) -> str:
    """``value`` as text that cannot end its line: every non-printable character becomes ``?``.

    Plans and locks are checked when read; this keeps a header a header whatever a caller hands in.
    """
    return "".join(c if c.isprintable() else "?" for c in str(value))
