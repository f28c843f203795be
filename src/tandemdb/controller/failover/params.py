"""A failover operation's parameters (`op.params`), typed, and the request body it starts
from. Parsed once per step from the stored JSON, written back as the same JSON."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..bodies import EnvironmentFailover, bad, parse
from ..events import EventType
from ..records import ReplicaRef

FAILOVER = "environment.failover"
CATCH_UP_TIMEOUT = 10.0  # the target must reach the final lsn within this (default)

# (started, completed, failed) events of a move away from home, and of one back home
EVENTS = {
    "failover": (EventType.FAILOVER_STARTED, EventType.FAILOVER_COMPLETED,
                 EventType.FAILOVER_FAILED),
    "failback": (EventType.FAILBACK_STARTED, EventType.FAILBACK_COMPLETED,
                 EventType.FAILBACK_FAILED),
    # a move to another node of the same region (node loss, drain: docs/ha.md)
    "node": (EventType.NODE_FAILOVER_STARTED, EventType.NODE_FAILOVER_COMPLETED,
             EventType.NODE_FAILOVER_FAILED),
}


def parse_request(raw: Any) -> tuple[str, float, str | None]:
    """`mode`, `catch_up_timeout` and `to` of a failover request body
    (`bodies.EnvironmentFailover`, {} when empty); 400 with what to fix."""
    body = parse(EnvironmentFailover, raw)
    if body.to is not None and body.mode != "planned":
        raise bad(f"invalid to {body.to!r} with mode {body.mode}: 'to' names the secondary of "
                  "a planned failover only; a forced failover promotes the geo-secondary")
    return body.mode, float(body.catch_up_timeout), body.to


@dataclass(frozen=True)
class Side:
    """One end of the move: a replica's node and region."""

    node: str
    region: str

    @classmethod
    def of(cls, replica: ReplicaRef) -> Side:
        return cls(replica.node, replica.region)

    def to_json(self) -> dict:
        return {"node": self.node, "region": self.region}


@dataclass(frozen=True)
class FailoverParams:
    """What an `environment.failover` operation moves, from where to where, and how."""

    environment: str
    mode: str  # planned | forced | sync (promote the sync local secondary, docs/ha.md)
    reason: str  # failover | failback (back to the home region) | node (within the region)
    epoch: int  # E, the epoch before the move
    source: Side  # "from": the old primary
    target: Side  # "to": the secondary to promote
    catch_up_timeout: float
    parent: str | None  # the region operation that started it, if one did
    lease_ttl: float | None = None  # forced only: the leases to wait out
    primary_last_seen_lsn: int | None = None  # forced only: the loss is counted against it

    @property
    def forced(self) -> bool:
        return self.mode == "forced"

    @property
    def events(self) -> tuple[EventType, EventType, EventType]:
        return EVENTS[self.reason]

    @classmethod
    def from_json(cls, p: Mapping[str, Any]) -> FailoverParams:
        return cls(p["environment"], p["mode"], p["reason"], p["epoch"],
                   Side(**p["from"]), Side(**p["to"]), p["catch_up_timeout"], p.get("parent"),
                   p.get("lease_ttl"), p.get("primary_last_seen_lsn"))

    def to_json(self) -> dict:
        out = {"environment": self.environment, "mode": self.mode, "reason": self.reason,
               "epoch": self.epoch, "from": self.source.to_json(),
               "to": self.target.to_json(), "catch_up_timeout": self.catch_up_timeout,
               "parent": self.parent}
        if self.mode != "planned":  # forced, sync
            out.update(lease_ttl=self.lease_ttl,
                       primary_last_seen_lsn=self.primary_last_seen_lsn)
        return out


def parse_time(text: str) -> float:
    """Unix seconds of one of the records' ISO times."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def seconds_between(start: str, end: str) -> float:
    return round(parse_time(end) - parse_time(start), 3)
