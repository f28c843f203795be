"""The catalog of environments: one record per environment under `environments/<name>`.

A record is what the controller decided, never what it observed:

    {"name", "type", "home_region", "primary_region", "epoch", "state",
     "rpo_limit_seconds", "created_at", "replicas": [{"region", "node", "role"}],
     "operation": "op-000017"}

`operation` is the last operation that changed the record (creation, deletion, later a
failover), so a view always says which operation to follow.

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
from enum import StrEnum
from typing import Any

from tandemdb.common.http import ApiError

from .bodies import DEFAULT_RPO_LIMIT_SECONDS, MAX_RPO, CreateEnvironment, parse, shown
from .store import Store, Txn

log = logging.getLogger("tandem.controller.catalog")

PREFIX = "environments/"
CAS_ATTEMPTS = 20


class EnvType(StrEnum):
    PRODUCTION = "production"  # primary in the home region, geo-secondary in the pair
    SANDBOX = "sandbox"  # one primary; protected by backups
    BASIC = "basic"  # one primary; `upgrade` makes it production


class EnvState(StrEnum):
    CREATING = "creating"
    ACTIVE = "active"
    SWITCHING = "switching"  # a failover runs: the gateway holds calls to the primary
    DELETING = "deleting"


class Role(StrEnum):
    PRIMARY = "primary"
    SECONDARY = "secondary"
    FENCED = "fenced"  # was primary; takes no writes while a failover moves the primary


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


def loaded(record: dict) -> dict:
    """A stored record as the controller uses it, with values a create refuses today (a
    record written before the bounds, or by hand) brought within them: they go into every
    heartbeat answer, and one such value once broke the heartbeats of every node."""
    rpo = record.get("rpo_limit_seconds")
    sane = sane_rpo(rpo)
    if type(sane) is type(rpo) and sane == rpo:
        return record
    key = (str(record.get("name")), shown(rpo))
    if key not in _REPAIRED:
        _REPAIRED.add(key)
        log.warning("environment %s: its record holds rpo_limit_seconds %s, outside 0 to %d "
                    "s; the controller uses %s instead (and stores that at the record's next "
                    "change)", key[0], key[1], MAX_RPO, sane)
    return {**record, "rpo_limit_seconds": sane}


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


def new_record(request: CreateRequest, replicas: list[dict],
               operation: str | None = None) -> dict:
    return {
        "name": request.name,
        "type": request.type.value,
        "home_region": request.region,
        "primary_region": request.region,
        "epoch": 1,
        "state": EnvState.CREATING.value,
        "rpo_limit_seconds": request.rpo_limit_seconds,
        "created_at": iso_now(),
        "replicas": replicas,
        "operation": operation,
    }


def not_found(name: str) -> ApiError:
    return ApiError(404, "not_found",
                    f"environment {name!r} does not exist: 'tandem env list' shows the "
                    "environments")


def _bad(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


class Catalog:
    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, name: str) -> dict | None:
        item = self.store.get(PREFIX + name)
        return loaded(item.value) if item else None

    def list(self) -> list[dict]:
        return [loaded(item.value) for item in self.store.list(PREFIX).values()]

    def items(self) -> builtins.list[tuple[dict, int]]:
        """Every record with its store version."""
        return [(loaded(item.value), item.version)
                for item in self.store.list(PREFIX).values()]

    def insert(self, record: dict) -> bool:
        """Store a new record; False if an environment of that name exists already."""
        return self.store.compare_and_set(PREFIX + record["name"], None, record)

    def update(self, name: str, change: Callable[[dict], dict]) -> dict | None:
        """Apply `change` to the record with compare-and-set; None if it does not exist."""
        for _ in range(CAS_ATTEMPTS):
            item = self.store.get(PREFIX + name)
            if item is None:
                return None
            record = change(dict(loaded(item.value)))
            if self.store.compare_and_set(PREFIX + name, item.version, record):
                return record
        raise RuntimeError(f"environment {name}: {CAS_ATTEMPTS} concurrent updates in a row "
                           "lost their compare-and-set; try again")

    def set_state(self, name: str, state: EnvState) -> dict | None:
        return self.update(name, lambda record: {**record, "state": state.value})

    def try_update(self, name: str, version: int, record: dict) -> int | None:
        """One compare-and-set of a record read at `version`: its new version, or None."""
        key = PREFIX + name
        versions = self.store.commit(Txn().expect(key, version).put(key, record))
        return None if versions is None else versions[key]

    def remove(self, name: str) -> bool:
        return self.store.delete(PREFIX + name)

    def replica_counts(self) -> Counter[str]:
        """Replicas per node over the whole catalog, for placement."""
        counts: Counter[str] = Counter()
        for record in self.list():
            for replica in record["replicas"]:
                counts[replica["node"]] += 1
        return counts
