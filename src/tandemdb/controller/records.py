"""Typed catalog records: an environment and its replicas, parsed once where the catalog
reads them (`Catalog.get`/`list`/`items`/`read`) and written back as the same JSON.

A stored record (docs/architecture.md, "The catalog"):

    {"name", "type", "home_region", "primary_region", "epoch", "state",
     "rpo_limit_seconds", "created_at", "operation",
     "replicas": [{"region", "node", "role", "behind"?, "fork_lsn"?, "unacknowledged"?,
                   "kind"?, "sync"?}]}

`behind` (with `fork_lsn` once the new primary's history forked off) marks the old primary
of a forced failover: its writes past the fork point are not the new history, so it must
rewind before it may stream again (rejoin.py); `unacknowledged` says a sync promotion left
it there (docs/ha.md), so none of those writes was acknowledged. `kind` is `geo` (the
secondary in the paired region) unless stored otherwise; it is written only when it is not
`geo`, so the records of today keep their shape. A `local` replica (another node of the
home region, docs/ha.md) also stores `sync`: true while the catalog records it as
synchronous (its primary acknowledges no write it lacks). A geo replica is never sync and
stores no `sync`.

Each record keeps the JSON it was read from (`raw`): `to_json()` writes the typed fields
into it, so unknown fields survive a round trip and keys keep their places, exactly as the
`{**record, "state": …}` updates before these types did.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from tandemdb.common.roles import Kind, Role


class EnvType(StrEnum):
    PRODUCTION = "production"  # primary in the home region, geo-secondary in the pair
    SANDBOX = "sandbox"  # one primary; protected by backups
    BASIC = "basic"  # one primary; `upgrade` makes it production


class EnvState(StrEnum):
    CREATING = "creating"
    ACTIVE = "active"
    SWITCHING = "switching"  # a failover runs: the gateway holds calls to the primary
    DELETING = "deleting"


def _merged(raw: Mapping[str, Any], values: Mapping[str, Any],
            optional: Iterable[str]) -> dict:
    """`raw` with `values` written in; an optional key whose value is None is left out
    unless `raw` has it (then it stays, as None)."""
    out = dict(raw)
    for key, value in values.items():
        if value is None and key in optional and key not in raw:
            continue
        out[key] = value
    return out


@dataclass(frozen=True)
class ReplicaRef:
    """One replica of an environment, as the catalog decided it."""

    region: str
    node: str
    role: Role
    kind: Kind = Kind.GEO
    sync: bool = False  # recorded synchronous (docs/ha.md, the sync rule): local only
    behind: bool = False  # a forced failover's old primary: writes past the fork point
    fork_lsn: int | None = None  # where the new history forked off (set with `behind`)
    # Left behind by a sync promotion (docs/ha.md): its entries past the fork point were
    # never acknowledged (stored as `unacknowledged`, with `behind`)
    unacked: bool = False
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> ReplicaRef:
        return cls(value["region"], value["node"], Role(value["role"]),
                   Kind(value.get("kind", Kind.GEO)), bool(value.get("sync", False)),
                   bool(value.get("behind", False)), value.get("fork_lsn"),
                   bool(value.get("unacknowledged", False)), value)

    def to_json(self) -> dict:
        out = _merged(self.raw, {"region": self.region, "node": self.node,
                                 "role": self.role.value}, ())
        if self.kind != Kind.GEO or "kind" in self.raw:
            out["kind"] = self.kind.value
        for key, value in (("sync", self.sync if self.kind == Kind.LOCAL else None),
                           ("behind", True if self.behind else None),
                           ("fork_lsn", self.fork_lsn),
                           ("unacknowledged", True if self.unacked else None)):
            if value is None:
                out.pop(key, None)
            else:
                out[key] = value
        return out

    def as_role(self, role: Role) -> ReplicaRef:
        return replace(self, role=role)

    def view(self) -> dict:
        """The replica as API answers show it: `kind` and `sync` on every replica."""
        return {**self.to_json(), "kind": self.kind.value, "sync": self.sync}


@dataclass(frozen=True)
class EnvRecord:
    """An environment's catalog record: what the controller decided, never what it saw."""

    name: str
    type: EnvType
    home_region: str
    primary_region: str
    epoch: int
    state: EnvState
    rpo_limit_seconds: int | float | None  # None: not stored (`loaded` repairs it)
    created_at: str | None
    replicas: tuple[ReplicaRef, ...]
    operation: str | None = None  # the last operation that changed the record
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> EnvRecord:
        return cls(value["name"], EnvType(value["type"]), value["home_region"],
                   value["primary_region"], value["epoch"], EnvState(value["state"]),
                   value.get("rpo_limit_seconds"), value.get("created_at"),
                   tuple(ReplicaRef.from_json(r) for r in value["replicas"]),
                   value.get("operation"), value)

    def to_json(self) -> dict:
        return _merged(self.raw, {
            "name": self.name, "type": self.type.value, "home_region": self.home_region,
            "primary_region": self.primary_region, "epoch": self.epoch,
            "state": self.state.value, "rpo_limit_seconds": self.rpo_limit_seconds,
            "created_at": self.created_at,
            "replicas": [r.to_json() for r in self.replicas],
            "operation": self.operation}, ("created_at", "operation", "rpo_limit_seconds"))

    # -- reading -------------------------------------------------------------------------

    @property
    def primary(self) -> ReplicaRef | None:
        return self.first(Role.PRIMARY)

    @property
    def secondaries(self) -> list[ReplicaRef]:
        return [r for r in self.replicas if r.role == Role.SECONDARY]

    @property
    def behind(self) -> ReplicaRef | None:
        """The replica a forced failover left behind, if any."""
        return next((r for r in self.replicas if r.behind), None)

    def first(self, role: Role) -> ReplicaRef | None:
        return next((r for r in self.replicas if r.role == role), None)

    def on(self, node: str) -> ReplicaRef | None:
        """The replica on `node`, if it hosts one."""
        return next((r for r in self.replicas if r.node == node), None)

    def in_region(self, region: str) -> ReplicaRef | None:
        return next((r for r in self.replicas if r.region == region), None)

    @property
    def nodes(self) -> list[str]:
        return [r.node for r in self.replicas]

    # -- changing ------------------------------------------------------------------------

    def with_(self, **changes: Any) -> EnvRecord:
        """A copy with fields changed (`replace`, for the call sites' brevity)."""
        return replace(self, **changes)

    def with_roles(self, roles: Mapping[str, Role]) -> EnvRecord:
        """A copy whose replicas on the nodes in `roles` have those roles."""
        return self.with_replicas(lambda r: r.as_role(roles[r.node]) if r.node in roles else r)

    def unsynced_outside(self, region: str) -> EnvRecord:
        """A copy in which no replica outside `region` (where the primary now is) is
        recorded sync: a primary in another region never waits for it (docs/ha.md)."""
        return self.with_replicas(
            lambda r: replace(r, sync=False) if r.sync and r.region != region else r)

    def with_replicas(self, change: Callable[[ReplicaRef], ReplicaRef]) -> EnvRecord:
        """A copy with `change(replica)` applied to each replica."""
        return replace(self, replicas=tuple(change(r) for r in self.replicas))
