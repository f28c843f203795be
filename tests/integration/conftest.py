"""Integration fixtures: a real local deployment (controller, gateway, nodes as processes),
from the shared harness (`tandemdb.testing`)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tandemdb.testing import LocalDeployment


@pytest.fixture(scope="module")
def cluster(start_deployment: Callable[..., LocalDeployment]) -> LocalDeployment:
    return start_deployment()
