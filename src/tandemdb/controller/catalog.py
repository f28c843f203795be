"""The catalog of environments: one record per environment under `environments/<name>`.

A record is what the controller decided, never what it observed; records.py types it
(`EnvRecord`, `ReplicaRef`) and says its stored shape. `operation` is the last operation
that changed the record (creation, deletion, a failover, a rejoin), so a view always says
which operation to follow.

Live status (lsns, lag, seeding) is merged in by `status.py`. Every change goes through
compare-and-set, so two writers never overwrite each other's decision.
"""

from __future__ import annotations

import builtins
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tandemdb.common.http import ApiError
from tandemdb.common.retry import cas_attempts

from .bodies import DEFAULT_RPO_LIMIT_SECONDS, MAX_RPO, CreateEnvironment, parse, shown
from .records import EnvRecord, EnvState, EnvType, ReplicaRef
from .store import Store, Txn

log = logging.getLogger("tandem.controller.catalog")

PREFIX = "environments/"


@dataclass(frozen=True)
class CreateRequest:
    name: str
    type: EnvType
    region: str
    rpo_limit_seconds: int | float


def parse_create(body: Any, regions: list[str]) -> CreateRequest:
    """Check a `POST /v1/environments` body (its schema is `bodies.CreateEnvironment`) and
    that its region exists; raise 400 with a message that says what to fix."""
    request = parse(CreateEnvironment, body)
    region = regions[0] if request.region is None else request.region
    if region not in regions:
        raise _bad(f"unknown region {region!r}: the regions are {', '.join(regions)}")
    return CreateRequest(request.name, EnvType(request.type), region,
                         request.rpo_limit_seconds)


def loaded(record: EnvRecord) -> EnvRecord:
    """A stored record as the controller uses it, with values a create refuses today (a
    record written before the bounds, or by hand) brought within them: they go into every
    heartbeat answer, and one such value once broke the heartbeats of every node."""
    rpo = record.rpo_limit_seconds
    sane = sane_rpo(rpo)
    if type(sane) is type(rpo) and sane == rpo:
        return record
    key = (record.name, shown(rpo))
    if key not in _REPAIRED:
        _REPAIRED.add(key)
        log.warning("environment %s: its record holds rpo_limit_seconds %s, outside 0 to %d "
                    "s; the controller uses %s instead (and stores that at the record's next "
                    "change)", key[0], key[1], MAX_RPO, sane)
    return record.with_(rpo_limit_seconds=sane)


def sane_rpo(value: Any) -> int | float:
    """`value` if it is a number of seconds above 0 and at most a day; a larger one is a
    day, anything else the default."""
    if type(value) not in (int, float) or value != value:  # not a number, or NaN
        return DEFAULT_RPO_LIMIT_SECONDS
    if value > MAX_RPO:
        return MAX_RPO
    return value if value > 0 else DEFAULT_RPO_LIMIT_SECONDS


_REPAIRED: set[tuple[str, str]] = set()  # (environment, value) already logged


def iso_now() -> str:
    """The current UTC time as ISO 8601 with milliseconds and a Z, as every record uses."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def record_key(name: str) -> str:
    return PREFIX + name


def new_record(request: CreateRequest, replicas: list[ReplicaRef],
               operation: str | None = None) -> EnvRecord:
    return EnvRecord(request.name, request.type, request.region, request.region, 1,
                     EnvState.CREATING, request.rpo_limit_seconds, iso_now(), tuple(replicas),
                     operation)


def not_found(name: str) -> ApiError:
    return ApiError(404, "not_found",
                    f"environment {name!r} does not exist: 'tandem env list' shows the "
                    "environments")


def _bad(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


class Catalog:
    """The records, typed where they are read (`loaded`: rpo values repaired)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, name: str) -> EnvRecord | None:
        item = self.store.get(PREFIX + name)
        return loaded(EnvRecord.from_json(item.value)) if item else None

    def list(self) -> list[EnvRecord]:
        return [loaded(EnvRecord.from_json(item.value))
                for item in self.store.list(PREFIX).values()]

    def items(self) -> builtins.list[tuple[EnvRecord, int]]:
        """Every record with its store version."""
        return [(loaded(EnvRecord.from_json(item.value)), item.version)
                for item in self.store.list(PREFIX).values()]

    def stored(self) -> builtins.list[tuple[EnvRecord, int]]:
        """Every record as stored (no repair) with its store version."""
        return [(EnvRecord.from_json(item.value), item.version)
                for item in self.store.list(PREFIX).values()]

    def read(self, name: str) -> tuple[EnvRecord, int] | None:
        """The record as stored (no repair: a step writes back what it read) and its
        version."""
        item = self.store.get(PREFIX + name)
        return (EnvRecord.from_json(item.value), item.version) if item else None

    def insert(self, record: EnvRecord) -> bool:
        """Store a new record; False if an environment of that name exists already."""
        return self.store.compare_and_set(PREFIX + record.name, None, record.to_json())

    def update(self, name: str,
               change: Callable[[EnvRecord], EnvRecord]) -> EnvRecord | None:
        """Apply `change` to the record with compare-and-set; None if it does not exist."""
        for _ in cas_attempts(f"environment {name}: an update"):
            item = self.store.get(PREFIX + name)
            if item is None:
                return None
            record = change(loaded(EnvRecord.from_json(item.value)))
            if self.store.compare_and_set(PREFIX + name, item.version, record.to_json()):
                return record
        raise AssertionError("unreachable: cas_attempts raises after its last attempt")

    def set_state(self, name: str, state: EnvState) -> EnvRecord | None:
        return self.update(name, lambda record: record.with_(state=state))

    def try_update(self, name: str, version: int, record: EnvRecord) -> int | None:
        """One compare-and-set of a record read at `version`: its new version, or None."""
        key = PREFIX + name
        versions = self.store.commit(stage(Txn(), record, version))
        return None if versions is None else versions[key]

    def remove(self, name: str) -> bool:
        return self.store.delete(PREFIX + name)

    def replica_counts(self) -> Counter[str]:
        """Replicas per node over the whole catalog, for placement."""
        return Counter(node for record in self.list() for node in record.nodes)

    def primary_counts(self) -> Counter[str]:
        """Primaries per node, to break placement ties (docs/ha.md)."""
        return Counter(record.primary.node for record in self.list() if record.primary)


def stage(txn: Txn, record: EnvRecord, version: int | None) -> Txn:
    """Add to `txn` the write of `record`, expected at `version` (None: a new one)."""
    key = record_key(record.name)
    return txn.expect(key, version).put(key, record.to_json())


__all__ = ["Catalog", "EnvRecord", "EnvState", "EnvType", "ReplicaRef", "loaded",
           "new_record", "not_found", "parse_create", "record_key", "stage"]
