"""Staged outages of a local deployment (`tandem region outage | recover`), as a file.

`outage.json` in the data directory maps each region taken out to how: `kill` (its nodes
SIGKILLed; `tandem up` does not restart them) or `partition` (the fault proxy cuts its
links). The dev launcher writes it; the fault proxy reads it at start, so a partition
outlives a restart of the proxy.
"""

from __future__ import annotations

import json
from pathlib import Path

OUTAGE_FILE = "outage.json"  # regions taken out by `tandem region outage`: region -> kind
KILL, PARTITION = "kill", "partition"  # the kinds of staged outage


def staged_outages(data: Path) -> dict[str, str]:
    """Region -> how it is out (`kill` or `partition`)."""
    path = Path(data) / OUTAGE_FILE
    if not path.exists():
        return {}
    staged = json.loads(path.read_text())
    return {r: KILL for r in staged} if isinstance(staged, list) else staged


def write_outages(data: Path, regions: dict[str, str]) -> None:
    """Record the regions that are out now (replacing what the file said)."""
    (Path(data) / OUTAGE_FILE).write_text(json.dumps(regions, sort_keys=True))
