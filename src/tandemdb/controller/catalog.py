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

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from tandemdb.common.http import ApiError

from .store import Store, Txn

PREFIX = "environments/"
NAME_PATTERN = re.compile(r"[a-z][a-z0-9-]{1,62}")
DEFAULT_RPO_LIMIT_SECONDS = 900
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
    rpo_limit_seconds: float


def parse_create(body: Any, regions: list[str]) -> CreateRequest:
    """Check a `POST /v1/environments` body; raise 400 with a message that says what to fix."""
    if not isinstance(body, dict):
        raise _bad('the body must be a JSON object such as {"name": "acme"}')
    unknown = sorted(set(body) - {"name", "type", "region", "rpo_limit_seconds"})
    if unknown:
        raise _bad(f"unknown field(s) {', '.join(unknown)}: the fields are name, type, "
                   "region and rpo_limit_seconds")
    name = body.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise _bad(f"invalid environment name {name!r}: use 2 to 63 characters, lowercase "
                   "letters, digits and '-', starting with a letter")
    kind = body.get("type", EnvType.PRODUCTION.value)
    if kind not in {t.value for t in EnvType}:
        raise _bad(f"invalid environment type {kind!r}: use production, sandbox or basic")
    region = body.get("region", regions[0])
    if region not in regions:
        raise _bad(f"unknown region {region!r}: the regions are {', '.join(regions)}")
    rpo = body.get("rpo_limit_seconds", DEFAULT_RPO_LIMIT_SECONDS)
    if isinstance(rpo, bool) or not isinstance(rpo, int | float) or not rpo > 0:
        raise _bad(f"invalid rpo_limit_seconds {rpo!r}: give a number of seconds above 0")
    return CreateRequest(name, EnvType(kind), region, rpo)


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
        return item.value if item else None

    def list(self) -> list[dict]:
        return [item.value for item in self.store.list(PREFIX).values()]

    def items(self) -> list[tuple[dict, int]]:
        """Every record with its store version."""
        return [(item.value, item.version) for item in self.store.list(PREFIX).values()]

    def insert(self, record: dict) -> bool:
        """Store a new record; False if an environment of that name exists already."""
        return self.store.compare_and_set(PREFIX + record["name"], None, record)

    def update(self, name: str, change: Callable[[dict], dict]) -> dict | None:
        """Apply `change` to the record with compare-and-set; None if it does not exist."""
        for _ in range(CAS_ATTEMPTS):
            item = self.store.get(PREFIX + name)
            if item is None:
                return None
            record = change(dict(item.value))
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
