"""A writer with unique ids, in the spirit of Jepsen's set workload.

Every id the gateway acknowledged must exist afterwards, exactly once; ids whose request
failed may or may not exist (the outcome of a failed request is unknown), but never twice.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Self

import httpx

from tandemdb.client import Client, TandemError
from tandemdb.common.http import SECRET_HEADER


@dataclass
class Loop:
    """A writer's thread: `start` runs `_run` until `stop`, which waits for it."""

    _stop: threading.Event = field(default_factory=threading.Event, kw_only=True)
    _thread: threading.Thread | None = field(default=None, kw_only=True)

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(30)


@dataclass
class Writer(Loop):
    client: Client
    env: str
    table: str = "events"
    first_id: int = 1
    # False: ids are not a key, so a write that ran twice shows as two rows (not an error).
    keyed: bool = True
    acked: list[int] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)
    lsns: list[int] = field(default_factory=list)
    epochs: list[int] = field(default_factory=list)

    def create_table(self) -> None:
        key = " PRIMARY KEY" if self.keyed else ""
        self.client.sql(self.env, f"CREATE TABLE IF NOT EXISTS {self.table}"
                                  f"(id INTEGER{key}, at REAL)")

    def _run(self) -> None:
        next_id = self.first_id
        while not self._stop.is_set():
            try:
                answer = self.client.sql(self.env, f"INSERT INTO {self.table}(id, at) "
                                                   "VALUES (?, ?)", [next_id, time.time()])
                self.acked.append(next_id)
                self.lsns.append(answer["lsn"])
                self.epochs.append(answer["epoch"])
            except (TandemError, OSError) as exc:
                self.failed.append((next_id, str(exc)))
                time.sleep(0.02)
            except Exception as exc:  # httpx transport errors: outcome unknown
                self.failed.append((next_id, repr(exc)))
                time.sleep(0.02)
            next_id += 1

    def check(self, region: str | None = None, min_lsn: int | None = None) -> set[int]:
        """Invariant 1/5: every acknowledged id is present exactly once. Returns all ids."""
        answer = self.client.sql(self.env, f"SELECT id FROM {self.table} ORDER BY id",
                                 read_region=region, min_lsn=min_lsn)
        ids = [row[0] for row in answer["results"][0]["rows"]]
        assert len(ids) == len(set(ids)), "an id is present twice"
        missing = set(self.acked) - set(ids)
        where = region or "primary"
        assert not missing, f"acknowledged ids missing in {where}: {sorted(missing)[:20]}"
        unexpected = set(ids) - set(self.acked) - {i for i, _ in self.failed}
        assert not unexpected, f"ids nobody wrote: {sorted(unexpected)[:20]}"
        return set(ids)


@dataclass
class DirectWriter(Loop):
    """Unique ids straight to one node's data API, past the gateway: a client that still
    reaches a partitioned primary. Each acknowledgement is kept with its wall time and
    epoch, so a test can check that none came in an old epoch after a promotion."""

    url: str  # the node's URL
    secret: str
    env: str
    first_id: int
    table: str = "events"
    acked: list[tuple[int, float, int]] = field(default_factory=list)  # (id, at, epoch)
    refused: list[tuple[int, float, str]] = field(default_factory=list)  # (id, at, code)
    unknown: list[int] = field(default_factory=list)  # no answer: outcome unknown

    def _run(self) -> None:
        sql = f"{self.url}/v1/environments/{self.env}/sql"
        with httpx.Client(headers={SECRET_HEADER: self.secret}, timeout=5.0) as http:
            next_id = self.first_id
            while not self._stop.is_set():
                body = {"statements": [{"sql": f"INSERT INTO {self.table}(id, at) VALUES "
                                               "(?, ?)", "params": [next_id, time.time()]}]}
                try:
                    answer = http.post(sql, json=body)
                except httpx.HTTPError:
                    self.unknown.append(next_id)
                    time.sleep(0.02)
                else:
                    if answer.status_code == 200:
                        self.acked.append((next_id, time.time(), answer.json()["epoch"]))
                    else:
                        self.refused.append((next_id, time.time(),
                                             answer.json()["error"]["code"]))
                        time.sleep(0.02)
                next_id += 1

    def acked_ids(self) -> set[int]:
        return {i for i, _, _ in self.acked}
