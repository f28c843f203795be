"""`GET /v1/nodes`: every node of the deployment, its state and what it hosts.

A node's `state` comes from the controller's view of its heartbeats (topology.py): `healthy`,
`down` (missed them past the health limit), or `unknown` (not heard from since this
controller started, moments ago). `cordoned` and `draining` are the states a drain sets
(docs/ha.md, "Drain"; stored, cordon.py): they are shown unless the node is silent, when
`down` says more. `primaries` and `secondaries` count the catalog's replicas on the node
(what was decided, not what the node reports).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from enum import StrEnum

from tandemdb.common.roles import Role

from .catalog import Catalog
from .cordon import Mark, marks
from .topology import Health, Topology


class NodeState(StrEnum):
    HEALTHY = "healthy"
    DOWN = "down"
    UNKNOWN = "unknown"  # not heard from since the controller started, moments ago
    CORDONED = "cordoned"  # drained: nothing new is placed on it
    DRAINING = "draining"  # a drain moves its replicas away


HEALTH_STATE = {Health.HEALTHY: NodeState.HEALTHY, Health.UNHEALTHY: NodeState.DOWN,
                Health.UNKNOWN: NodeState.UNKNOWN}


def state_of(topology: Topology, node: str, marked: Mapping[str, Mark]) -> NodeState:
    """The node's state: `down` when silent, else its drain state if it has one."""
    health = topology.health(node)
    if health == Health.UNHEALTHY or node not in marked:
        return HEALTH_STATE[health]
    return NodeState(marked[node].value)


def node_list(topology: Topology, catalog: Catalog) -> list[dict]:
    """One entry per node, in deployment order. Blocking (reads the catalog)."""
    marked = marks(catalog.store)
    hosted: Counter[tuple[str, Role]] = Counter(
        (replica.node, replica.role) for record in catalog.list()
        for replica in record.replicas)
    urls = topology.node_urls()
    nodes = []
    for region in topology.region_names():
        for node in topology.nodes_in(region):
            age = topology.heartbeat_age(node)
            nodes.append({"name": node, "region": region, "url": urls[node],
                          "state": state_of(topology, node, marked).value,
                          "primaries": hosted[(node, Role.PRIMARY)],
                          "secondaries": hosted[(node, Role.SECONDARY)],
                          "last_heartbeat_age": None if age is None else round(age, 3)})
    return nodes
