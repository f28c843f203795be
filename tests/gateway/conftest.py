"""Fixtures for gateway tests: a lone gateway process, or a whole deployment.

`gateway_only`: a gateway with no controller behind it (routing never loads).
`cluster`: controller, one node per region and the gateway, all real processes.
tests/cli imports these fixtures too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tandemdb.testing import LocalDeployment

from .cluster import deployed

SMALL_BODY_LIMIT = 4096  # so that 413 tests need only small bodies
CLUSTER_BODY_LIMIT = 2 << 20  # end-to-end tests move 1 MiB files and refuse 3 MiB ones


@pytest.fixture(scope="module")
def gateway_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalDeployment]:
    """Shared by a module's tests: they only read from it (it has nothing to change)."""
    with deployed(tmp_path_factory.mktemp("gateway") / "data", start=["gateway"],
                  max_body_bytes=SMALL_BODY_LIMIT) as gateway:
        yield gateway


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalDeployment]:
    with deployed(tmp_path / "data", max_body_bytes=CLUSTER_BODY_LIMIT) as running:
        yield running
