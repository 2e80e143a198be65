# Every target does its own set-up on a fresh Debian/Ubuntu machine.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
APT_PKGS := skopeo docker-registry containerd podman openssl procps chromium poppler-utils gnupg gpgv dpkg-dev rpm createrepo-c dnf python3-solv debian-archive-keyring db-util

.PHONY: test demo bench lint setup system-deps clean

# Byte-compiled once here, as pip does for an installed package: an editable install under
# PYTHONDONTWRITEBYTECODE would otherwise compile every module on every command.
setup: $(STAMP) system-deps
	@$(PY) -m compileall -q mirrorkit
	@# Debian's real signed metadata and one kernel's .debs for the real-metadata package test (no test downloads)
	@$(PY) tests/kit/realdebian.py

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@# the offline-installer test reaches no package index: its wheels come from here
	$(PY) -c 'import tomllib; print("\n".join(["pip", *tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]]))' \
	  | xargs -d '\n' $(PY) -m pip download -q --disable-pip-version-check --only-binary :all: --implementation cp \
	    --python-version $$($(PY) -c "import sys; print(*sys.version_info[:2], sep='.')") --platform manylinux_2_28_$$(uname -m) --platform manylinux_2_17_$$(uname -m) \
	    --platform manylinux2014_$$(uname -m) -d $(VENV)/wheelhouse
	touch $(STAMP)

system-deps:
	@bash scripts/install-system-deps.sh $(APT_PKGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check mirrorkit tests scripts
	$(VENV)/bin/mypy

test: setup lint
	$(VENV)/bin/pytest -q

demo: setup
	$(PY) scripts/demo.py

bench: setup
	$(PY) scripts/bench.py
	$(PY) scripts/bench_serve.py
	$(PY) scripts/bench_packages.py

clean:
	rm -rf $(VENV) .pytest_cache bundles/*.tar bundles/*.yaml
