"""Shared fixtures: real registries on loopback, stopped after each test."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kit.registryd import DEFAULT_BINARY, RegistryServer

TEST_USERS = {"alice": "s3cret-Pa55"}


@pytest.fixture
def registry_factory() -> Iterator[Callable[..., RegistryServer]]:
    """Start extra registries: ``registry_factory(auth=True)`` gets htpasswd for alice."""
    if shutil.which(DEFAULT_BINARY) is None:
        pytest.fail(f"{DEFAULT_BINARY} is not installed: run 'make test', which installs it")
    servers: list[RegistryServer] = []

    def start(auth: bool = False, **kwargs: Any) -> RegistryServer:
        if auth:
            kwargs.setdefault("users", TEST_USERS)
        server = RegistryServer(**kwargs)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def registry(registry_factory: Callable[..., RegistryServer]) -> RegistryServer:
    """A fresh anonymous registry for one test."""
    return registry_factory()
