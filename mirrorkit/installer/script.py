"""``install.sh``: mirrorkit installed from the wheels beside it, with no package index and no network.

POSIX sh, no bash-isms (RHEL's and Ubuntu's /bin/sh differ); it trusts nothing it has not
checked: every file against SHA256SUMS first, and no wheel that SHA256SUMS does not list
(``--find-links`` would otherwise pick up anything dropped into the folder). pip itself runs
from its wheel in the folder, so the system Python needs its ``venv`` module but not
``ensurepip`` (which Debian and Ubuntu package apart, as ``python3.X-venv``). The Python
it looks for is one this installer has wheels for; when there is none, it names the
package that provides one on the systems air-gapped GPU clusters mostly run (RHEL 8/9
ship ``python3.11`` in AppStream, Ubuntu 22.04 ``python3.11`` in universe).
"""

from __future__ import annotations

TEMPLATE = r"""#!/bin/sh
# mirrorkit @VERSION@ offline installer: installs mirrorkit from the wheels beside this script,
# with no package index and no network.
#   sh install.sh [--prefix DIR] [--python PYTHON]
# DIR (default $HOME/.local/share/mirrorkit) becomes a virtual environment; the command is DIR/bin/mirrorkit.
set -eu

VERSION='@VERSION@'
PYTHONS='@PYTHONS@'
ARCHES='@ARCHES@'

die() { echo "install.sh: $*" >&2; exit 1; }

prefix="${MIRRORKIT_PREFIX:-${HOME:-/root}/.local/share/mirrorkit}"
python=""
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) [ $# -ge 2 ] || die "--prefix needs a folder"; prefix=$2; shift 2 ;;
    --prefix=*) prefix=${1#--prefix=}; shift ;;
    --python) [ $# -ge 2 ] || die "--python needs a program"; python=$2; shift 2 ;;
    --python=*) python=${1#--python=}; shift ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done

here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

# 1. every file as it was built, and nothing else among the wheels
command -v sha256sum >/dev/null 2>&1 || die "sha256sum not found (coreutils)"
sha256sum -c --quiet --strict SHA256SUMS || die "SHA256SUMS check failed: this copy is damaged or was altered"
for f in wheels/*; do
  awk -v f="$f" '$2 == f { found = 1 } END { exit !found }' SHA256SUMS || die "$f is not listed in SHA256SUMS"
done

# 2. the machine
arch=$(uname -m)
case " $ARCHES " in
  *" $arch "*) ;;
  *) die "this installer holds wheels for $ARCHES, not $arch" \
       "(build one with: mirrorkit offline-installer --platform $arch)" ;;
esac

# 3. a Python this installer has wheels for
version_of() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null; }
supported() { case " $PYTHONS " in *" $1 "*) return 0 ;; esac; return 1; }
if [ -n "$python" ]; then
  v=$(version_of "$python") || die "$python does not run"
  supported "$v" || die "$python is Python $v; this installer holds wheels for Python $PYTHONS"
else
  for candidate in python3.13 python3.12 python3.11 python3; do
    command -v "$candidate" >/dev/null 2>&1 || continue
    v=$(version_of "$candidate") || continue
    if supported "$v"; then python=$candidate; break; fi
  done
fi
if [ -z "$python" ]; then
  found=$(version_of python3 || true)
  hint="install Python 3.11 or newer, with its venv module, from your distribution"
  id=""; ver=""
  osr=${MIRRORKIT_OS_RELEASE:-/etc/os-release}
  if [ -r "$osr" ]; then
    id=$(. "$osr" && echo "${ID:-}")
    ver=$(. "$osr" && echo "${VERSION_ID:-}")
  fi
  case "$id:$ver" in
    rhel:8*|rhel:9*|centos:8*|centos:9*|rocky:8*|rocky:9*|almalinux:8*|almalinux:9*|ol:8*|ol:9*)
      hint="run: sudo dnf install python3.11" ;;
    ubuntu:22.04) hint="run: sudo apt install python3.11 python3.11-venv" ;;
    ubuntu:*|debian:*) hint="install python3.11 (or newer) and its -venv package with apt" ;;
  esac
  die "no Python $PYTHONS found (python3 here is ${found:-missing}); $hint; then run this again (or pass --python PATH)"
fi

# 4. a virtual environment (without ensurepip, which Debian and Ubuntu ship apart: pip comes from its wheel here)
"$python" -c 'import venv' >/dev/null 2>&1 || die "$python has no venv module"
set -- wheels/pip-*.whl
[ -f "$1" ] || die "no pip wheel in $here/wheels"
pip_wheel="$here/$1"
"$python" -m venv --without-pip "$prefix" || die "could not create a virtual environment in $prefix"

# 5. mirrorkit from these wheels only
PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
  "$prefix/bin/python" "$pip_wheel/pip" install --quiet --no-index --find-links "$here/wheels" "mirrorkit==$VERSION" \
  || die "pip could not install mirrorkit $VERSION from $here/wheels"
"$prefix/bin/mirrorkit" --help >/dev/null || die "the installed mirrorkit does not start"
echo "mirrorkit $VERSION installed in $prefix (Python $(version_of "$python"))"
echo "run: $prefix/bin/mirrorkit --help   (or add $prefix/bin to PATH)"
"""


def install_sh(version: str, pythons: list[str], arches: list[str]) -> str:
    """The script for this installer's version, Pythons (newest first) and machine architectures."""
    ordered = sorted(pythons, key=lambda v: tuple(int(x) for x in v.split(".")), reverse=True)
    return (TEMPLATE.replace("@VERSION@", version).replace("@PYTHONS@", " ".join(ordered))
            .replace("@ARCHES@", " ".join(arches)))
