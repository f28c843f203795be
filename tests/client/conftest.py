"""Fixtures for the SDK tests, shared by a module's tests (each uses its own environments):
a whole deployment (`live`), and a lone gateway with the same token but no controller
behind it (`lone_gateway`), which answers 503 `unavailable` to every /v1 call."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tandemdb.local import free_base_port
from tandemdb.testing import LocalDeployment
from tests.gateway.cluster import deployed


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalDeployment]:
    """Controller, a node per region and the gateway, real processes."""
    with deployed(tmp_path_factory.mktemp("live") / "data") as running:
        yield running


@pytest.fixture(scope="module")
def lone_gateway(live: LocalDeployment,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a gateway process that takes `live`'s token and cannot serve."""
    with deployed(tmp_path_factory.mktemp("lone") / "data", start=["gateway"],
                  token=live.deployment.token) as lone:
        yield lone.deployment.gateway_url


@pytest.fixture
def dead_urls() -> list[str]:
    """Two free loopback ports with nothing listening: connections are refused."""
    base = free_base_port(2)
    return [f"http://127.0.0.1:{base + i}" for i in range(2)]


@pytest.fixture
def dead_url(dead_urls: list[str]) -> str:
    return dead_urls[0]
