"""Node states a drain sets (docs/ha.md, "Drain"): `draining`, then `cordoned`.

They are decisions, so they live in the catalog store, one record per node that has one:
`node_states/<node>` = `{"node", "state", "since", "operation"}` (the drain that set it).
No record: the node is placeable, health aside. Not under `nodes/<node>`: the topology
keeps there the URL a node reports, and rewrites that record whole.

A node with a state is never chosen for a new replica (`Topology.place`); `GET /v1/nodes`
shows the state unless the node is silent (`down` wins: node_list.py). `uncordon` removes
the record; it is refused while the drain that set it still runs.
"""

from __future__ import annotations

import logging
from enum import StrEnum

from tandemdb.common.http import ApiError

from .catalog import iso_now
from .operations import LIVE, Operations
from .store import Item, Store, Txn

log = logging.getLogger("tandem.controller.cordon")

PREFIX = "node_states/"


class Mark(StrEnum):
    DRAINING = "draining"  # a drain moves its replicas away
    CORDONED = "cordoned"  # drained: nothing new is placed on it


def state_key(node: str) -> str:
    return PREFIX + node


def marks(store: Store) -> dict[str, Mark]:
    """Every node that has a state, with it. Blocking (reads the store)."""
    return {item.value["node"]: Mark(item.value["state"])
            for item in store.list(PREFIX).values()}


def stage_mark(txn: Txn, node: str, mark: Mark, op_id: str | None,
               item: Item | None) -> dict:
    """Add to `txn` the node's new state, expected at `item`'s version (None: no state)."""
    value = {"node": node, "state": mark.value, "since": iso_now(), "operation": op_id}
    txn.expect(state_key(node), item.version if item else None).put(state_key(node), value)
    return value


class Cordons:
    """Reading and clearing node states; a drain (drain.py) sets them."""

    def __init__(self, store: Store, operations: Operations) -> None:
        self.store, self.operations = store, operations

    def read(self, node: str) -> Item | None:
        return self.store.get(state_key(node))

    def draining_op(self, item: Item | None) -> str | None:
        """The live drain that set this state, if any (a drain that crashed leaves none)."""
        if item is None or item.value["state"] != Mark.DRAINING:
            return None
        op_id = item.value.get("operation") or ""
        op = self.operations.get(op_id)
        return op_id if op is not None and op["state"] in LIVE else None

    def uncordon(self, node: str) -> dict:
        """Make the node placeable again: `{"node", "state": "healthy"|…, "was"}`. 409
        while a drain of it runs. Blocking."""
        item = self.read(node)
        if item is None:
            return {"node": node, "was": None}
        running = self.draining_op(item)
        if running is not None:
            raise ApiError(409, "busy", f"node {node} is being drained (operation "
                           f"{running}); uncordon it once that has ended: tandem ops "
                           f"{running}")
        txn = Txn().expect(state_key(node), item.version).delete(state_key(node))
        if self.store.commit(txn) is None:
            raise ApiError(409, "busy", f"node {node}: its state changed meanwhile; try again")
        log.info("node %s: uncordoned (was %s since %s); new replicas may be placed on it "
                 "again", node, item.value["state"], item.value.get("since"))
        return {"node": node, "was": item.value["state"]}
