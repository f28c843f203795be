"""Per-node metrics (docs/architecture.md "Metrics"); requests are counted and timed by
the request metrics every process shares (`tandemdb.common.metrics`: same counters, same
labels).

Gauges are read from the replicas at scrape time, so they are never stale; the counters
are bumped by the puller as it applies entries. The node's routes are plain Starlette
routes (`add_route`) that name their template in the scope, so `RequestMetrics`, the plain
ASGI middleware of `tandemdb.common.metrics`, counts them by template.
"""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.routing import Match, Route
from starlette.types import Scope

from tandemdb.common.roles import Role

from .lease import Lease
from .replicas import ReplicaSet

REPLICATED_ENTRIES = Counter("tandem_replicated_entries", "Journal entries applied from a peer",
                             ["env"])
REPLICATED_BYTES = Counter("tandem_replicated_bytes", "Journal bytes applied from a peer",
                           ["env"])
SYNC_WAIT = Histogram(
    "tandem_sync_wait_seconds", "How long a primary's group commit waited for its sync "
    "secondary's acknowledgement (docs/ha.md, the sync rule)",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))


class ReplicaCollector(Collector):
    def __init__(self, replicas: ReplicaSet, lease: Lease | None = None) -> None:
        self.replicas, self.lease = replicas, lease

    def collect(self):
        applied = GaugeMetricFamily("tandem_env_applied_lsn", "Last lsn of the replica",
                                    labels=["env", "role"])
        primary = GaugeMetricFamily("tandem_env_primary_lsn", "Last lsn of a primary replica",
                                    labels=["env"])
        lag_entries = GaugeMetricFamily("tandem_env_lag_entries",
                                        "Entries a consumer has not acknowledged",
                                        labels=["env", "consumer"])
        lag_seconds = GaugeMetricFamily("tandem_env_lag_seconds",
                                        "Seconds since the oldest unacknowledged commit",
                                        labels=["env", "consumer"])
        halted = GaugeMetricFamily(
            "tandem_replication_halted",
            "1 while a secondary's stream is halted at an entry it cannot apply (re-seed it: "
            "tandem env reseed ENV --region R), else 0", labels=["env"])
        for replica in self.replicas:
            if replica.role == Role.SECONDARY:
                halted.add_metric([replica.name], 1 if replica.halted is not None else 0)
            env = replica.env
            if env is None:
                continue
            applied.add_metric([replica.name, replica.role], env.last_lsn)
            if replica.role == Role.PRIMARY:
                primary.add_metric([replica.name], env.last_lsn)
            for node in list(replica.consumers):
                entries, seconds = replica.lag(node)
                lag_entries.add_metric([replica.name, node], entries)
                lag_seconds.add_metric([replica.name, node], seconds)
        yield from (applied, primary, lag_entries, lag_seconds, halted)
        if self.lease is not None and self.lease.required:  # leases off: no gauge at all
            remaining = GaugeMetricFamily(
                "tandem_node_lease_remaining_seconds",
                "Seconds until this node's lease expires (0: expired or never granted; "
                "primaries then refuse writes)")
            remaining.add_metric([], self.lease.remaining() or 0.0)
            failsafe = GaugeMetricFamily(
                "tandem_env_failsafe_remaining_seconds",
                "Seconds a primary's failsafe lease (its geo-secondary vouching) has left",
                labels=["env"])
            now = self.lease.clock()
            for replica in self.replicas:
                if replica.role == Role.PRIMARY:
                    failsafe.add_metric([replica.name], max(0.0, replica.failsafe_until - now))
            yield remaining
            yield failsafe


def install(replicas: ReplicaSet, lease: Lease | None = None) -> ReplicaCollector:
    collector = ReplicaCollector(replicas, lease)
    REGISTRY.register(collector)
    return collector


class _Route(Route):
    """A plain Starlette route (no FastAPI dependency solving on the data path) that names
    itself in the scope, so requests are counted by its template."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match != Match.NONE:
            child["route"] = self
        return match, child


def add_route(app: FastAPI, path: str, endpoint, methods: list[str]) -> None:
    app.router.routes.append(_Route(path, endpoint, methods=methods))
