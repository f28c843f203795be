"""Real Tandem processes for gateway, SDK and CLI tests (no mocks of Tandem's own parts),
through the harness (`tandemdb.testing`, docs/testing.md): each process logs to
`<data>/logs/<name>.log`, is waited for on its `/healthz`, and all are stopped at the end."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tandemdb.testing import LocalDeployment

HEARTBEAT_INTERVAL = 0.2


@contextmanager
def deployed(data: Path, start: Iterable[str] | None = None,
             **settings: object) -> Iterator[LocalDeployment]:
    """`LocalDeployment.temporary` in `data` with these suites' short heartbeat interval:
    every process (or only `start`), and every log's tail printed once all are stopped,
    which pytest shows when a test failed."""
    cluster: LocalDeployment | None = None
    try:
        with LocalDeployment.temporary(data, start=start,
                                       heartbeat_interval=HEARTBEAT_INTERVAL,
                                       **settings) as cluster:
            yield cluster
    finally:
        if cluster is not None:
            print(cluster.logs_tail())
