"""A replica's role record: what the controller wants a node to host, as the node keeps it.

The same record arrives in heartbeat answers and admin PUTs (the controller's desired
replica) and is kept on disk as `replica.json` beside the engine files. `version` is the
catalog record's store version: a node never takes a record older than the one it has, so
a late heartbeat answer cannot undo a failover step (docs/architecture.md).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from tandemdb.common.http import ApiError
from tandemdb.common.roles import Role

NAME = re.compile(r"[a-z][a-z0-9-]{1,62}")
RECORD_FILE = "replica.json"
# Roles are `tandemdb.common.roles.Role`, the controller's words: only a primary writes
# (under its lease, gate.py); `fenced` was primary and must not write.
ROLES = {role.value: role for role in Role}
TYPES = ("production", "sandbox", "basic")
# Epochs and versions are stored as SQLite integers (64-bit): a larger one would fail deep
# in the engine, not here. Strings in a record are names and URLs: short.
MAX_INT = (1 << 63) - 1
MAX_TEXT = 2048


def parse_version(raw: dict) -> int:
    """The optional catalog `version` of a record or a failover call (0 when absent)."""
    version = raw.get("version", 0)
    if version is None:
        return 0
    if type(version) is not int or not 0 <= version <= MAX_INT:
        raise ApiError(400, "bad_request", "version must be an integer from 0 to 2^63 - 1")
    return version


def parse_rpo(raw: object) -> float:
    """`rpo_limit_seconds`: a positive finite number of seconds (900 when absent).

    Checked here, not trusted: a value the node cannot use (a 400-digit integer overflows
    a float, Infinity would turn the RPO guard off) refuses this one record, never more."""
    if raw is None:
        return 900.0
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ApiError(400, "bad_request", "rpo_limit_seconds must be a number of seconds")
    try:
        rpo = float(raw)
    except OverflowError:
        rpo = math.inf
    if not math.isfinite(rpo) or rpo <= 0:
        raise ApiError(400, "bad_request", "rpo_limit_seconds must be a positive finite "
                       f"number of seconds, not {_short(raw)}")
    return rpo


def _short(value: object) -> str:
    """A value for an error message, cut short (it may be 400 digits long)."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}…({len(text)} characters)"


def check_name(name: str) -> str:
    if not NAME.fullmatch(name or ""):
        raise ApiError(400, "invalid_name",
                       f"environment name {name!r} must match [a-z][a-z0-9-]{{1,62}}")
    return name


@dataclass(frozen=True)
class Peer:
    node: str
    region: str
    url: str
    # A primary's secondary only: the sync secondary, whose acknowledgement every write
    # waits for (docs/ha.md, "the sync rule"). At most one of a record's secondaries.
    sync: bool = False

    @classmethod
    def parse(cls, raw: object, what: str) -> Peer:
        if not isinstance(raw, dict) or not all(
                isinstance(raw.get(k), str) and 0 < len(raw[k]) <= MAX_TEXT
                for k in ("node", "region", "url")):
            raise ApiError(400, "bad_request", f"{what} must be {{node, region, url}} strings")
        url = raw["url"].rstrip("/")
        if not url.startswith(("http://", "https://")) or not url.isprintable() \
                or " " in url:
            raise ApiError(400, "bad_request", f"{what}: url must be an http(s) URL, not "
                           f"{_short(raw['url'])}")
        sync = raw.get("sync", False)
        if type(sync) is not bool:
            raise ApiError(400, "bad_request", f"{what}: sync must be true or false, not "
                           f"{_short(sync)}")
        return cls(raw["node"], raw["region"], url, sync)

    def to_dict(self) -> dict:
        """Written only when true: records without a sync secondary stay as they were."""
        out = {"node": self.node, "region": self.region, "url": self.url}
        return {**out, "sync": True} if self.sync else out


@dataclass(frozen=True)
class Record:
    """A replica's role record (the desired-replica record of the controller, kept on disk)."""

    role: Role
    epoch: int
    primary: Peer | None = None
    secondaries: tuple[Peer, ...] = ()
    type: str = "production"
    rpo_limit_seconds: float = 900.0
    # The controller's catalog version this record comes from (0: unknown). A replica never
    # takes a record older than its own, so a late heartbeat answer cannot undo a fence.
    version: int = 0
    # A secondary only: its pulls vouch for its primary, whose failsafe lease they keep
    # while the controller cannot be reached (docs/leases.md). Off while a failover fences
    # that primary, and before the controller says so (records from older versions).
    vouch: bool = False

    @classmethod
    def parse(cls, raw: object) -> Record:
        """A record from the controller (heartbeat answer, admin PUT) or from disk.

        Every bad value raises ApiError (400), and nothing else: a node refuses that one
        record and logs it; its other replicas and its heartbeat go on (issue 9, item 3)."""
        if not isinstance(raw, dict):
            raise ApiError(400, "bad_request", "a replica record must be a JSON object")
        name, epoch = raw.get("role"), raw.get("epoch", 1)
        role = ROLES.get(name) if isinstance(name, str) else None
        if role is None:
            raise ApiError(400, "bad_request", f"role must be one of {', '.join(ROLES)}")
        if type(epoch) is not int or not 1 <= epoch <= MAX_INT:
            raise ApiError(400, "bad_request", "epoch must be an integer from 1 to 2^63 - 1")
        kind = raw.get("type") or "production"
        if not isinstance(kind, str) or kind not in TYPES:
            raise ApiError(400, "bad_request", f"type must be one of {', '.join(TYPES)}")
        rpo = parse_rpo(raw.get("rpo_limit_seconds"))
        primary = raw.get("primary")
        primary = None if primary is None else Peer.parse(primary, "primary")
        if role is Role.SECONDARY and primary is None:
            raise ApiError(400, "bad_request", "a secondary needs its primary {node, region, url}")
        secondaries = raw.get("secondaries") or []
        if not isinstance(secondaries, list):
            raise ApiError(400, "bad_request", "secondaries must be a list")
        peers = tuple(Peer.parse(s, "each secondary") for s in secondaries)
        if sum(peer.sync for peer in peers) > 1:
            raise ApiError(400, "bad_request", "at most one secondary may be sync, not "
                           f"{', '.join(peer.node for peer in peers if peer.sync)}")
        vouch = raw.get("vouch", False)
        if type(vouch) is not bool:
            raise ApiError(400, "bad_request", "vouch must be true or false")
        return cls(role, epoch, primary, peers, kind, rpo, parse_version(raw),
                   vouch and role is Role.SECONDARY)

    @property
    def sync_peer(self) -> Peer | None:
        """A primary's sync secondary, as this record names it (None: none)."""
        if self.role is not Role.PRIMARY:
            return None
        return next((peer for peer in self.secondaries if peer.sync), None)

    def to_dict(self) -> dict:
        return {"role": self.role.value, "epoch": self.epoch,
                "primary": self.primary.to_dict() if self.primary else None,
                "secondaries": [s.to_dict() for s in self.secondaries],
                "type": self.type, "rpo_limit_seconds": self.rpo_limit_seconds,
                "version": self.version, "vouch": self.vouch}
