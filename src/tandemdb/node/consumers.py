"""A primary's consumers: the secondaries that pull its journal, as the node tracks them.

A consumer's position is its acknowledgement (stream.py): it counts for lag and the RPO
guard at once, and is recorded durably by the upkeep. Consumers belong to the node's event
loop, which iterates them (stream, upkeep, lag reports, metrics): a worker thread adopting
a record answers what the engine keeps, and the loop applies it (`track`). Changing them
from the thread raised "dictionary changed size during iteration" under load.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from tandemdb.engine import Environment, JournalTruncated


@dataclass
class Consumer:
    """A secondary that pulls this replica's journal; its position is its acknowledgement."""

    acked_lsn: int = 0
    persisted_lsn: int = 0  # what `Environment.acknowledge` has recorded durably
    next_at: float | None = None  # committed_at of entry acked_lsn + 1, once known
    seen_at: float = 0.0  # time.time() of its last stream request

    def advance(self, lsn: int) -> None:
        if lsn != self.acked_lsn:
            self.acked_lsn, self.next_at = lsn, None
        self.seen_at = time.time()


def track(consumers: dict[str, Consumer], persisted: dict[str, int] | None) -> None:
    """Make `consumers` those the engine now keeps (None: no engine). Event loop only."""
    if persisted is None:
        return
    for node, lsn in persisted.items():
        consumer = consumers.get(node)
        if consumer is None:
            consumers[node] = Consumer(lsn, lsn)
        else:
            consumer.persisted_lsn = max(consumer.persisted_lsn, lsn)
    for node in [node for node in consumers if node not in persisted]:
        del consumers[node]


def oldest_unapplied_at(env: Environment, acked: int) -> float | None:
    try:
        entries = env.read_journal(acked, max_entries=1)
    except JournalTruncated:
        # The consumer is behind the journal (it must seed): count from the oldest retained.
        entries = env.read_journal(env.first_lsn() - 1, max_entries=1)
    return entries[0].committed_at if entries else None
