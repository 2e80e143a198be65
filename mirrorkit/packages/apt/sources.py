"""apt sources files as users have them: one-line (``sources.list``) and deb822 (``*.sources``).

Only ``deb`` entries count (``deb-src`` is skipped). Each entry names a repository root (URI), suites
and components, and the keyring that signs it (``signed-by=`` / ``Signed-By:``, a path or, in
deb822, an inline armored key). A missing ``signed-by`` is refused: mirrorkit never falls back to
whatever keys the connected machine happens to trust. Flat repositories (a suite ending in ``/``)
are refused too. python-debian parses deb822; the one-line form is split here (its grammar is one
line: ``deb [opt=val ...] URI SUITE COMPONENT...``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from debian.deb822 import Deb822

from mirrorkit.errors import InputError

_OPTIONS = re.compile(r"^\[([^\]]*)\]\s*")
_WORD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~/-]{0,127}$")


@dataclass
class AptEntry:
    """One ``deb`` line or stanza: a repository root with its suites and components."""

    uri: str
    suites: list[str]
    components: list[str]
    keys: list[Path]
    where: str
    options: dict[str, str] = field(default_factory=dict)
    deb822: bool = False
    signed_by_text: str = ""       # the signed-by value as written: the far side's repo file keeps it


def _check_uri(uri: str, where: str) -> str:
    if not uri.startswith(("http://", "https://")):
        raise InputError(f"{where}: only http:// and https:// repositories can be carried, not {uri!r}")
    return uri.rstrip("/")


def _check_words(words: list[str], what: str, where: str) -> list[str]:
    for word in words:
        if word.endswith("/"):
            raise InputError(f"{where}: flat repository suite {word!r} is not supported")
        if not _WORD.match(word) or ".." in word.split("/"):
            raise InputError(f"{where}: invalid {what} {word!r}")
    return words


def _keys(value: str, source: Path, where: str, inline_dir: Path, n: int) -> list[Path]:
    value = value.strip()
    if "BEGIN PGP PUBLIC KEY BLOCK" in value:
        inline_dir.mkdir(parents=True, exist_ok=True)
        key = inline_dir / f"inline-{n}.asc"
        # deb822 folds the block: continuation lines hold " ." for empty lines
        lines = [("" if ln.strip() == "." else ln.strip()) for ln in value.splitlines()]
        key.write_text("\n".join(lines) + "\n")
        return [key]
    out = []
    for item in value.replace(",", " ").split():
        path = Path(item)
        if not path.is_absolute():
            path = source.parent / path
        if not path.is_file():
            raise InputError(f"{where}: signed-by names {item}, which is not a file here")
        out.append(path)
    if not out:
        raise InputError(f"{where}: signed-by is empty")
    return out


def _one_line(source: Path, text: str, inline_dir: Path) -> list[AptEntry]:
    entries = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        where = f"{source}:{lineno}"
        if not line:
            continue
        kind, _, rest = line.partition(" ")
        if kind == "deb-src":
            continue
        if kind != "deb":
            raise InputError(f"{where}: expected 'deb [options] URI SUITE COMPONENT...', got {kind!r}")
        rest = rest.strip()
        options: dict[str, str] = {}
        m = _OPTIONS.match(rest)
        if m:
            for opt in m.group(1).split():
                key, sep, value = opt.partition("=")
                if not sep:
                    raise InputError(f"{where}: option {opt!r} is not KEY=VALUE")
                options[key.lower()] = value
            rest = rest[m.end():]
        words = rest.split()
        if len(words) < 3:
            raise InputError(f"{where}: expected URI SUITE COMPONENT... after 'deb'")
        keys = _keys(options["signed-by"], source, where, inline_dir, lineno) if "signed-by" in options else []
        entries.append(AptEntry(_check_uri(words[0], where), _check_words([words[1]], "suite", where),
                                _check_words(words[2:], "component", where), keys, where,
                                {k: v for k, v in options.items() if k != "signed-by"},
                                signed_by_text=options.get("signed-by", "")))
    return entries


def _deb822(source: Path, text: str, inline_dir: Path) -> list[AptEntry]:
    entries = []
    for n, para in enumerate(Deb822.iter_paragraphs(text.splitlines(keepends=True), use_apt_pkg=False)):
        where = f"{source}: stanza {n + 1}"
        fields = {k.lower(): str(v) for k, v in para.items()}
        if fields.get("enabled", "yes").strip().lower() == "no":
            continue
        types = fields.get("types", "").split()
        if "deb" not in types:
            continue
        uris = fields.get("uris", "").split()
        suites = fields.get("suites", "").split()
        components = fields.get("components", "").split()
        if not uris or not suites or not components:
            raise InputError(f"{where}: needs URIs, Suites and Components")
        keys = _keys(fields["signed-by"], source, where, inline_dir, n) if fields.get("signed-by", "").strip() else []
        options = {k: v.strip() for k, v in fields.items()
                   if k not in ("types", "uris", "suites", "components", "signed-by", "enabled")}
        for uri in uris:
            entries.append(AptEntry(_check_uri(uri, where), _check_words(suites, "suite", where),
                                    _check_words(components, "component", where), keys, where, options,
                                    deb822=True, signed_by_text=fields.get("signed-by", "").strip()))
    return entries


def parse_sources(source: Path, inline_dir: Path) -> list[AptEntry]:
    """Every ``deb`` entry of an apt sources file; inline keys are written under ``inline_dir``."""
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{source}: cannot read the apt sources file: {exc}") from None
    deb822 = source.suffix == ".sources" or any(
        ln.lower().startswith(("types:", "uris:")) for ln in text.splitlines())
    entries = _deb822(source, text, inline_dir) if deb822 else _one_line(source, text, inline_dir)
    if not entries:
        raise InputError(f"{source}: no 'deb' repository in it")
    return entries
