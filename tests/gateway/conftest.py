"""Fixtures for gateway tests: a lone gateway process, or a whole deployment.

`gateway_only`: a gateway with no controller behind it (routing never loads).
`cluster`: controller, one node per region and the gateway, all real processes.
tests/cli imports these fixtures too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .cluster import Deployed, plan

SMALL_BODY_LIMIT = 4096  # so that 413 tests need only small bodies
CLUSTER_BODY_LIMIT = 2 << 20  # end-to-end tests move 1 MiB files and refuse 3 MiB ones


@pytest.fixture(scope="module")
def gateway_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    """Shared by a module's tests: they only read from it (it has nothing to change)."""
    data = tmp_path_factory.mktemp("gateway") / "data"
    deployed = Deployed(plan(data, max_body_bytes=SMALL_BODY_LIMIT))
    try:
        deployed.start("gateway")
        yield deployed
    finally:
        deployed.stop_all()
        print(deployed.logs_tail())  # shown by pytest when the test failed


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Deployed]:
    deployed = Deployed(plan(tmp_path / "data", max_body_bytes=CLUSTER_BODY_LIMIT))
    try:
        deployed.start_all()
        yield deployed
    finally:
        deployed.stop_all()
        print(deployed.logs_tail())
