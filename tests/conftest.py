"""Fixtures every suite may use; the harness itself is `tandemdb.testing` (docs/testing.md)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest

from tandemdb.testing import LocalDeployment


@pytest.fixture(scope="module")
def start_deployment(
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., LocalDeployment]]:
    """`start_deployment(name, **settings)`: a running local deployment (processes) in a
    fresh directory named after `name`, kept after the run for its logs; every one started
    in a module is stopped when the module is done."""
    with ExitStack() as stack:
        def start(name: str = "deployment", **settings: object) -> LocalDeployment:
            return stack.enter_context(
                LocalDeployment.temporary(tmp_path_factory.mktemp(name), **settings))
        yield start
