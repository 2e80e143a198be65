"""A yum/dnf ``.repo`` file as users have it: its sections, dnf variables expanded per node.

Only what a partial mirror needs is read: the section id, ``name``, ``baseurl`` (the first one;
``mirrorlist``/``metalink`` alone are refused, since a carried mirror has one fixed origin),
``enabled``, ``gpgcheck``, ``repo_gpgcheck`` and ``gpgkey`` (the raw line is kept for the far side,
where the key is already in the image). Variables are dnf's own: ``$releasever``, ``$basearch``,
``$arch`` and those the driver image defines in ``/etc/dnf/vars`` (Rocky's ``$contentdir``,
``$rltype``).
"""

from __future__ import annotations

import configparser
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from mirrorkit.errors import InputError

_VAR = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
_TRUE = {"1", "yes", "true", "on"}
_FALSE = {"0", "no", "false", "off"}
_SAFE_ID = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class RepoSection:
    """One ``[id]`` section of a ``.repo`` file, variables not yet expanded."""

    id: str
    name: str
    baseurl: str
    enabled: bool
    gpgcheck: bool
    repo_gpgcheck: bool
    gpgkey: str          # the raw value (file:// URLs, space or comma separated)
    where: str           # "FILE [id]" for error messages


def _flag(section: configparser.SectionProxy, key: str, default: bool, where: str) -> bool:
    value = section.get(key)
    if value is None:
        return default
    value = value.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise InputError(f"{where}: {key}={value!r} is not a yes/no value")


def parse_repo_file(path: Path) -> list[RepoSection]:
    """Every section of a ``.repo`` file (disabled ones included: the caller skips them)."""
    parser = configparser.RawConfigParser(strict=False, interpolation=None, comment_prefixes=("#", ";"))
    try:
        parser.read_string(path.read_text(encoding="utf-8"), source=str(path))
    except OSError as exc:
        raise InputError(f"{path}: cannot read the repo file: {exc.strerror or exc}") from None
    except (configparser.Error, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{path}: not a yum .repo file ({first})") from None
    sections = []
    for sid in parser.sections():
        if sid == "main":
            continue
        sec = parser[sid]
        where = f"{path} [{sid}]"
        baseurls = (sec.get("baseurl") or "").replace(",", " ").split()
        enabled = _flag(sec, "enabled", True, where)
        if enabled and not baseurls:
            how = "mirrorlist/metalink" if (sec.get("mirrorlist") or sec.get("metalink")) else "nothing"
            raise InputError(f"{where}: has no baseurl ({how}): name the repository's baseurl to carry it")
        if enabled and sec.get("sslclientcert"):
            raise InputError(f"{where}: TLS client certificates (sslclientcert) are not supported: "
                             "name a mirror or Satellite baseurl that does not need one")
        sections.append(RepoSection(
            id=sid, name=(sec.get("name") or sid).strip(), baseurl=baseurls[0] if baseurls else "",
            enabled=enabled, gpgcheck=_flag(sec, "gpgcheck", False, where),
            repo_gpgcheck=_flag(sec, "repo_gpgcheck", False, where), gpgkey=(sec.get("gpgkey") or "").strip(),
            where=where))
    if not any(s.enabled for s in sections):
        raise InputError(f"{path}: no enabled repository in it")
    return sections


def image_variables(image_root: Path | None) -> dict[str, str]:
    """The dnf variables the driver image defines (``/etc/dnf/vars/*``, ``/etc/yum/vars/*``)."""
    found: dict[str, str] = {}
    if image_root is None:
        return found
    for folder in ("etc/yum/vars", "etc/dnf/vars"):   # dnf's own folder wins
        base = image_root / folder
        if not base.is_dir():
            continue
        for entry in sorted(base.iterdir()):
            if entry.is_file() and re.fullmatch(r"\w+", entry.name):
                try:
                    lines = entry.read_text(encoding="utf-8", errors="replace").splitlines()
                except OSError:
                    continue
                found[entry.name] = lines[0].strip() if lines else ""
    return found


def expand(value: str, variables: dict[str, str], where: str) -> str:
    """``value`` with every ``$var``/``${var}`` replaced, or a one-line error naming the unknown one."""
    def one(m: re.Match[str]) -> str:
        key = m.group(1) or m.group(2)
        if key not in variables:
            raise InputError(f"{where}: unknown dnf variable ${key} (not in the driver image's /etc/dnf/vars)")
        return variables[key]
    return _VAR.sub(one, value)


def dnf_variables(release: str, arch: str, image_vars: dict[str, str]) -> dict[str, str]:
    """dnf's variables for one node: the image's own, then releasever/basearch/arch for that node."""
    major, _, minor = release.partition(".")
    return {**image_vars, "releasever": release, "releasever_major": major, "releasever_minor": minor,
            "basearch": arch, "arch": arch}


def key_files(section: RepoSection, image_root: Path | None, variables: dict[str, str]) -> list[Path]:
    """The local key files ``gpgkey=`` names: the path as given, else the same path in the driver image.

    The value is expanded like the baseurl (EPEL names ``RPM-GPG-KEY-EPEL-$releasever_major``).

    Only ``file://`` keys are used: a key fetched over the network at pull time would be trusted
    because of where it came from, which is what the signature check is there to avoid.
    """
    keys = []
    for url in expand(section.gpgkey, variables, section.where).replace(",", " ").split():
        parts = urlsplit(url)
        if parts.scheme != "file":
            raise InputError(f"{section.where}: gpgkey {url!r} is not a file:// key (download it and name the file)")
        path = Path(unquote(parts.path))
        if not path.is_file() and image_root is not None and (image_root / path.relative_to("/")).is_file():
            path = image_root / path.relative_to("/")
        keys.append(path)
    return keys


def carry_name(section: RepoSection, release: str, arch: str) -> str:
    """The carried repository's name (its folder on the far side and its section id there).

    The section id, followed by the release and/or architecture its baseurl depends on
    (``baseos-8.9-x86_64``): one section expands to one repository per release, the name is the same
    whichever nodes were resolved together (the pipeline merges what two driver images carry by
    name), and every repo file mounted side by side in ``/etc/yum.repos.d`` keeps a distinct section id.
    """
    used = {m.group(1) or m.group(2) for m in _VAR.finditer(section.baseurl)}
    base = section.id
    if used & {"releasever", "releasever_major", "releasever_minor"}:
        base += f"-{release}"
    if used & {"basearch", "arch"}:
        base += f"-{arch}"
    name = _SAFE_ID.sub("_", base).strip("._-") or "repo"
    return name[:128]


def far_side_text(section: RepoSection, name: str, gpgcheck: bool, repo_gpgcheck: bool) -> str:
    """The far side's ``.repo`` file: same checks, same key line, ``@URL@`` where the mirror goes.

    ``repo_gpgcheck`` is on where the source had it and the carried metadata has its signature.
    """
    lines = [f"[{name}]", f"name={section.name} (mirrorkit partial mirror)", "baseurl=@URL@", "enabled=1",
             f"gpgcheck={1 if gpgcheck else 0}"]
    if repo_gpgcheck:
        lines.append("repo_gpgcheck=1")
    if section.gpgkey:
        lines.append(f"gpgkey={section.gpgkey}")
    return "\n".join(lines) + "\n"
