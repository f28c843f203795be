"""What each node should host: the desired replicas sent in heartbeat answers and admin PUTs.

The heartbeat answer is the full list of replicas a node should host; the node creates what
is missing, drops what is no longer listed and adopts roles. That makes heartbeats the
repair path for every admin call that did not arrive (a node that was down while an
environment was created or deleted). Each difference between a node's report and the
catalog is logged once, in one sentence, when it first appears.
"""

from __future__ import annotations

import logging

from tandemdb.common.roles import Kind, Role

from .catalog import Catalog, EnvRecord, EnvState, ReplicaRef
from .topology import Topology

log = logging.getLogger("tandem.controller.reconcile")


class Reconciler:
    def __init__(self, catalog: Catalog, topology: Topology) -> None:
        self.catalog, self.topology = catalog, topology
        self._cache: tuple[int, dict[str, list[dict]]] | None = None
        self._logged: dict[str, set[str]] = {}

    def desired(self, record: EnvRecord, replica: ReplicaRef, version: int) -> dict:
        """One replica as a node must host it (heartbeat answer and PUT body alike).

        While a failover runs the old primary is `fenced`: its secondaries keep pulling from
        it (so they can reach its final lsn), and it keeps every other replica as a
        consumer. A new primary lists every other replica, the fenced one included, so the
        journal they still need is kept. A secondary vouches for its primary (the failsafe
        lease, docs/leases.md) only while the catalog has that primary as `primary`: a
        forced failover, which fences it here first, relies on that. Only a geo-secondary
        vouches: a local one shares its primary's home region, so it cannot speak for the
        pair (docs/ha.md). Each listed secondary carries `sync`, as the catalog records it:
        the primary waits for a sync one before it acknowledges a write."""
        others = [r for r in record.replicas if r.node != replica.node]
        source = (next((r for r in others if r.role == Role.PRIMARY), None)
                  or next((r for r in others if r.role == Role.FENCED), None))
        role = replica.role
        if role == Role.PRIMARY:
            # A fenced old primary is a consumer (the journal it needs is kept) unless a
            # forced failover left it `behind`, with writes past the fork point: it must be
            # rewound before it can stream, and counting it would trip the RPO guard.
            listed = [r for r in others if not r.behind]
        elif role == Role.FENCED:
            listed = [r for r in others if r.role == Role.SECONDARY]
        else:
            listed = []
        return {
            "env": record.name,
            "role": role.value,
            "epoch": record.epoch,
            "type": record.type.value,
            "rpo_limit_seconds": record.rpo_limit_seconds,
            "primary": self.topology.node_ref(source.node)
            if role == Role.SECONDARY and source is not None else None,
            "secondaries": [{**self.topology.node_ref(r.node), "sync": r.sync}
                            for r in listed],
            "vouch": role == Role.SECONDARY and replica.kind == Kind.GEO
            and source is not None and source.role == Role.PRIMARY,
            # The catalog record's store version: a node never goes back to an older one,
            # so an answer computed before a failover step cannot undo it.
            "version": version,
        }

    def desired_for(self, node: str) -> tuple[int, list[dict]]:
        """Every replica `node` should host, and the store revision that list is as of;
        rebuilt only when the store changed. Blocking (reads the store)."""
        revision = self.catalog.store.revision()
        if self._cache is None or self._cache[0] != revision:
            by_node: dict[str, list[dict]] = {}
            for record, version in self.catalog.items():
                if record.state == EnvState.DELETING:
                    continue  # leaving it out makes the nodes drop it
                for replica in record.replicas:
                    by_node.setdefault(replica.node, []).append(
                        self.desired(record, replica, version))
            self._cache = (revision, by_node)
        revision, by_node = self._cache
        return revision, by_node.get(node, [])

    def answer(self, node: str, reported: dict[str, dict]) -> dict:
        """The heartbeat answer for `node` (`{"replicas", "revision"}`); logs how its report
        differs from the catalog. Blocking. A node drops a replica left out of an answer
        only if its own record is not newer than the answer's revision."""
        revision, desired = self.desired_for(node)
        self._log_differences(node, reported, desired)
        return {"replicas": desired, "revision": revision}

    def _log_differences(self, node: str, reported: dict[str, dict],
                         desired: list[dict]) -> None:
        found = set()
        wanted = {d["env"]: d for d in desired}
        for env, want in wanted.items():
            have = reported.get(env)
            if have is None:
                found.add(f"environment {env} (epoch {want['epoch']}): node {node} does not "
                          f"host its {want['role']} replica yet; the heartbeat answer tells "
                          "it to create it")
            elif have.get("role") != want["role"] or have.get("epoch") != want["epoch"]:
                found.add(f"environment {env} (epoch {want['epoch']}): node {node} reports "
                          f"its replica as {have.get('role')} at epoch {have.get('epoch')} "
                          f"but the catalog says {want['role']}; the heartbeat answer tells "
                          "it to adopt that")
        for env in sorted(set(reported) - set(wanted)):
            found.add(f"environment {env}: node {node} hosts a replica the catalog does not "
                      "place there; the heartbeat answer leaves it out, so the node drops it")
        before = self._logged.get(node, set())
        for sentence in sorted(found - before):
            log.info(sentence)
        if before and not found:
            log.info("node %s: its replicas now match the catalog", node)
        self._logged[node] = found
