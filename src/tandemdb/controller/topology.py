"""Regions, their pairs and their nodes; node health from heartbeats; replica placement.

Regions and pairs come from `deployment.json` and are seeded into the store on first start
(`regions/<name>`). Nodes are listed in the deployment too; the URL each node last reported
is kept in the store (`nodes/<name>`) so that the routing table follows it. Health is kept
in memory only: a node is healthy if it heartbeated within 3 x `heartbeat_interval`.

After a controller (re)start, or its election as leader, a node not heard from yet is
**unknown**, not unhealthy: this process has not listened long enough to tell. It stays
unknown for 6 heartbeat intervals of this process's own observation (`unknown_window`),
plus, with several controllers, a heartbeat's timeout (a node whose beat went to a hung
former leader waits that long before it moves on), then counts as unhealthy. Steps that
need a node up wait for its health to be known (`wait_known`) instead of failing on a
silence that only means "just started" (docs/operations.md#controller-restarts).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from enum import StrEnum

from tandemdb.common.deployment import CONTROLLER, Deployment

from .cordon import marks
from .store import Store

log = logging.getLogger("tandem.controller.topology")

HEALTH_FACTOR = 3  # heartbeats a node may miss before it counts as unhealthy
# Heartbeat intervals after the start during which a node never heard from is unknown: its
# first heartbeat to this process may come one interval late, and one more may be lost to
# the connection the previous process left behind.
UNKNOWN_FACTOR = 6


class Health(StrEnum):
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    UNKNOWN = "unknown"  # not heard from since this controller started, which was just now


class Topology:
    def __init__(self, store: Store, deployment: Deployment,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store, self.deployment, self.clock = store, deployment, clock
        self.health_limit = HEALTH_FACTOR * deployment.heartbeat_interval
        self.unknown_window = UNKNOWN_FACTOR * deployment.heartbeat_interval
        if len(deployment.controller_specs()) > 1:
            self.unknown_window += deployment.heartbeat_timeout
        self.listening_since = clock()  # see `listening`
        self._heard = threading.Condition()  # notified at each heartbeat (`wait_known`)
        self._last_seen: dict[str, float] = {}
        self._believed_healthy: dict[str, bool] = {}
        self._urls: dict[str, str] = {}  # URLs already in the store, to skip reads

    # -- regions -------------------------------------------------------------------------

    def seed(self) -> None:
        """Write each region of the deployment into the store unless it is there already."""
        for name, pair in self.deployment.regions.items():
            key = f"regions/{name}"
            current = self.store.get(key)
            if current is None:
                if self.store.compare_and_set(key, None,
                                              {"name": name, "pair": pair, "state": "healthy"}):
                    log.info("region %s: seeded into the store, paired with %s, state healthy",
                             name, pair)
            elif current.value.get("pair") != pair:
                record = {**current.value, "pair": pair}
                if self.store.compare_and_set(key, current.version, record):
                    log.warning("region %s: pair changed from %s to %s because "
                                "deployment.json says so", name, current.value.get("pair"), pair)

    def region_names(self) -> list[str]:
        """Regions in deployment order; the first one is the default home region."""
        return list(self.deployment.regions)

    def has_region(self, name: str) -> bool:
        return name in self.deployment.regions

    def pair_of(self, region: str) -> str:
        return self.deployment.regions[region]

    def region_records(self) -> list[dict]:
        stored = {item.value["name"]: item.value for item in self.store.list("regions/").values()}
        return [stored.get(name, {"name": name, "pair": pair, "state": "healthy"})
                for name, pair in self.deployment.regions.items()]

    # -- nodes ---------------------------------------------------------------------------

    def nodes_in(self, region: str) -> list[str]:
        return self.deployment.nodes_in(region)

    def region_of(self, node: str) -> str | None:
        spec = self.deployment.nodes.get(node)
        return spec["region"] if spec else None

    def node_urls(self) -> dict[str, str]:
        """Every node's URL: the one it last reported, else the one deployment.json gives."""
        reported = {item.value["name"]: item.value["url"]
                    for item in self.store.list("nodes/").values()}
        return {node: reported.get(node, self.deployment.node_url(node))
                for node in self.deployment.nodes}

    def node_url(self, node: str) -> str:
        """The node's URL, from memory once known: failover steps call this on the event
        loop, which must not wait for the store behind a commit."""
        url = self._urls.get(node)
        if url is not None:
            return url
        item = self.store.get(f"nodes/{node}")
        if item is None:
            return self.deployment.node_url(node)
        self._urls[node] = item.value["url"]  # this process is the only writer of nodes/
        return item.value["url"]

    def call_url(self, node: str) -> str:
        """Where the controller's own calls to a node go: through its fault-proxy link in a
        deployment that has one (`tandem up --fault-proxy`), else to `node_url`."""
        return self.deployment.proxied_url(CONTROLLER, node) or self.node_url(node)

    def node_ref(self, node: str) -> dict:
        """How the controller points one node at another: `{"node", "region", "url"}`."""
        return {"node": node, "region": self.region_of(node), "url": self.node_url(node)}

    def knows_url(self, node: str, url: str) -> bool:
        """True if `url` is already the node's stored URL (no store access needed)."""
        return self._urls.get(node) == url

    def remember_url(self, node: str, url: str) -> bool:
        """Keep the URL a node reports; True if it is new (the routing table changes)."""
        if self._urls.get(node) == url:
            return False
        item = self.store.get(f"nodes/{node}")
        if item is None or item.value["url"] != url:
            self.store.put(f"nodes/{node}", {"name": node, "region": self.region_of(node),
                                             "url": url})
        self._urls[node] = url
        return item is None or item.value["url"] != url

    # -- health --------------------------------------------------------------------------

    def listening(self) -> None:
        """Start the unknown window now: the process is about to take heartbeats (its
        start-up before this, e.g. opening the store, is not time the nodes had)."""
        self.listening_since = self.clock()

    def heard_from(self, node: str) -> bool:
        """Record a heartbeat; True if the node was not healthy before it."""
        was_healthy = self._believed_healthy.get(node, False)
        with self._heard:
            self._last_seen[node] = self.clock()
            self._heard.notify_all()
        self._believed_healthy[node] = True
        return not was_healthy

    def heartbeat_age(self, node: str) -> float | None:
        seen = self._last_seen.get(node)
        return None if seen is None else self.clock() - seen

    def silent_for(self, node: str) -> float:
        """Seconds without a heartbeat: since the last one, or since this process listens
        (never longer than it has observed, so a restart cannot make a node look lost)."""
        age = self.heartbeat_age(node)
        return self.clock() - self.listening_since if age is None else age

    def health(self, node: str) -> Health:
        age = self.heartbeat_age(node)
        if age is None:
            observed = self.clock() - self.listening_since
            return Health.UNKNOWN if observed < self.unknown_window else Health.UNHEALTHY
        return Health.HEALTHY if age <= self.health_limit else Health.UNHEALTHY

    def healthy(self, node: str) -> bool:
        return self.health(node) == Health.HEALTHY

    def wait_known(self, nodes: Iterable[str]) -> dict[str, Health]:
        """Each node's health once none is unknown. Blocking, at most until the unknown
        window ends (a few heartbeat intervals after the start; at once later on)."""
        nodes = list(nodes)
        with self._heard:
            while True:
                healths = {node: self.health(node) for node in nodes}
                remaining = self.unknown_window - (self.clock() - self.listening_since)
                if Health.UNKNOWN not in healths.values() or remaining <= 0:
                    return healths
                self._heard.wait(min(remaining, self.deployment.heartbeat_interval))

    def newly_unhealthy(self) -> list[tuple[str, float]]:
        """Nodes that were healthy and missed their heartbeats since: (node, age)."""
        lost = []
        for node, believed in self._believed_healthy.items():
            if believed and not self.healthy(node):
                self._believed_healthy[node] = False
                lost.append((node, self.heartbeat_age(node) or 0.0))
        return lost

    def healthy_count(self, region: str) -> int:
        return sum(1 for node in self.nodes_in(region) if self.healthy(node))

    def node_views(self, region: str) -> list[dict]:
        urls = self.node_urls()
        views = []
        for node in self.nodes_in(region):
            age = self.heartbeat_age(node)
            health = self.health(node)
            views.append({"name": node, "url": urls[node],
                          "healthy": health == Health.HEALTHY, "health": health.value,
                          "last_heartbeat_age": None if age is None else round(age, 3)})
        return views

    # -- placement -----------------------------------------------------------------------

    def place(self, region: str, replica_counts: Counter[str], exclude: Iterable[str] = (),
              tiebreak: Counter[str] | None = None) -> tuple[str, str]:
        """The node of `region` for a new replica, and why: fewest replicas wins.

        Healthy nodes are preferred; when none of the region's nodes is healthy (e.g. just
        after a controller restart) the choice is made among all of them. Ties go to the
        node with the fewest `tiebreak` (a primary goes where fewer primaries are, so a
        lost node takes fewer of them), then to the first name, so placement is
        deterministic. Nodes in `exclude` (those that already hold a replica of the
        environment) and nodes a drain marked (`draining`, `cordoned`: cordon.py) are never
        chosen; LookupError when no node is left.
        """
        skipped = set(exclude)
        marked = marks(self.store)
        nodes = [n for n in self.nodes_in(region) if n not in skipped and n not in marked]
        if not nodes:
            cordoned = sorted(set(self.nodes_in(region)) & marked.keys())
            raise LookupError(f"region {region} has no node for a new replica"
                              + (f" ({', '.join(cordoned)} drained or draining: 'tandem "
                                 "node uncordon NODE' makes one placeable again)"
                                 if cordoned else ""))
        healthy = [n for n in nodes if self.healthy(n)]
        pool = healthy or nodes
        ties = tiebreak or Counter()
        node = min(pool, key=lambda n: (replica_counts[n], ties[n], n))
        if len(nodes) == 1:
            placeable = "placeable " if marked.keys() & set(self.nodes_in(region)) else ""
            return node, f"the only {'other ' if skipped else ''}{placeable}node of {region}"
        among = "its healthy nodes" if healthy else "its nodes (none is healthy yet)"
        return node, f"the fewest replicas ({replica_counts[node]}) among {among}"


# A node not heard from since this controller started is taken as lost only after this long
# (or the caller's limit if longer): at `tandem up` the nodes start after the controller,
# one by one, and a loaded machine may take seconds for each.
UNHEARD_GRACE = 15.0


class Silences:
    """Nodes silent past a limit, each answered once per outage: a node heard from again
    within the limit ends its outage, so a later loss is a new one. In this process only
    (a restarted controller counts silence from its own start, `Topology.silent_for`)."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.seen: set[str] = set()

    def newly_past(self, limit: float) -> list[tuple[str, float]]:
        """(node, seconds silent) for each node silent past `limit` (at least
        `UNHEARD_GRACE` for a node never heard from) not answered yet in this outage."""
        out = []
        for node in self.topology.deployment.nodes:
            silent = self.topology.silent_for(node)
            heard = self.topology.heartbeat_age(node) is not None
            if silent < (limit if heard else max(limit, UNHEARD_GRACE)):
                self.seen.discard(node)
            elif node not in self.seen:
                self.seen.add(node)
                out.append((node, silent))
        return out
