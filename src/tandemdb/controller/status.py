"""Live replica status from the nodes' latest heartbeats, merged into environment views.

Kept in memory only: after a controller restart the views show `null` lsns until the nodes
report again (within one heartbeat interval). What each number means:

- `applied_lsn`: the replica's own report (`last_lsn`), primary or secondary;
- `lag_entries`, `lag_seconds`: for a secondary, from its **primary's** `consumers` report
  for the secondary's node (the primary computes lag from its journal and the
  acknowledgements, on its own clock); 0 for the primary itself;
- `seeding`: the secondary's own report while it copies a snapshot;
- `primary_lsn`: the primary's `last_lsn`;
- `state`: `serving` (the primary), `streaming`, `seeding` or `halted` (a secondary), or
  `null` before its node reports (and for a fenced replica); a `halted` one has an
  `error` that says what stopped it and how to re-seed it (halts.py).
"""

from __future__ import annotations

from typing import Any

from tandemdb.common.http import ApiError
from tandemdb.common.roles import Role

from .catalog import EnvRecord, ReplicaRef
from .halts import iso, parse_halt, reseed_hint


class LiveStatus:
    def __init__(self) -> None:
        self._reports: dict[str, dict[str, dict]] = {}  # node -> env -> replica report
        self.peers: dict[str, dict] = {}  # node -> peer -> {"failing_seconds"}

    def record(self, node: str, replicas: dict[str, dict],
               peers: dict[str, dict] | None = None) -> None:
        self._reports[node] = replicas
        self.peers[node] = peers or {}

    def reported(self, node: str) -> dict[str, dict]:
        return self._reports.get(node, {})

    def report(self, node: str, env: str) -> dict | None:
        return self._reports.get(node, {}).get(env)

    def view(self, record: EnvRecord) -> dict:
        """The catalog record plus live status: what `GET /v1/environments/{env}` answers."""
        env, primary = record.name, record.primary
        primary_report = self.report(primary.node, env) if primary else None
        consumers = (primary_report or {}).get("consumers") or {}
        replicas = []
        for replica in record.replicas:
            own = self.report(replica.node, env) or {}
            if replica.role == Role.PRIMARY:
                lag: dict[str, Any] = {"lag_entries": 0, "lag_seconds": 0.0}
            else:
                seen = consumers.get(replica.node) or {}
                lag = {"lag_entries": seen.get("lag_entries"),
                       "lag_seconds": seen.get("lag_seconds")}
            replicas.append({**replica.view(), "applied_lsn": own.get("last_lsn"), **lag,
                             "seeding": own.get("seeding"),
                             **replica_state(env, replica, own)})
        return {**record.to_json(), "replicas": replicas,
                "primary_lsn": (primary_report or {}).get("last_lsn")}


def replica_state(env: str, replica: ReplicaRef, own: dict) -> dict:
    """`state` and `error` of one replica in the view, from its node's own report."""
    if not own:
        return {"state": None, "error": None}
    if replica.role != Role.SECONDARY:
        return {"state": "serving" if replica.role == Role.PRIMARY else None,
                "error": None}
    halt = parse_halt(own.get("halted"))
    if halt is None:
        return {"state": "seeding" if own.get("seeding") else "streaming", "error": None}
    region = replica.region
    return {"state": "halted", "error": {
        "code": "replication_halted",
        "message": f"replication of {env} to {region} halted at lsn {halt['lsn']}: "
                   f"{halt['code']}: {halt['message']}. The {replica.kind.value} "
                   f"secondary on {replica.node} is not being "
                   "updated, and will not retry by itself; re-seed it from a snapshot of "
                   f"the primary: {reseed_hint(env, region)}",
        "lsn": halt["lsn"], "applied_lsn": halt["applied_lsn"], "cause": halt["code"],
        "detail": halt["message"], "since": iso(halt["at"]),
        "fix": reseed_hint(env, region)}}


def parse_heartbeat(body: Any, nodes: dict[str, dict]) -> tuple[str, str, dict[str, dict]]:
    """Check a heartbeat body against the deployment; returns (node, url, replicas)."""
    if not isinstance(body, dict):
        raise _bad("a heartbeat must be a JSON object with node, region, url and replicas")
    node, region, url = body.get("node"), body.get("region"), body.get("url")
    if node not in nodes:
        raise _bad(f"heartbeat from unknown node {node!r}: the nodes of deployment.json are "
                   f"{', '.join(sorted(nodes))}")
    if region != nodes[node]["region"]:
        raise _bad(f"node {node} reports region {region!r} but deployment.json puts it in "
                   f"{nodes[node]['region']!r}")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise _bad(f"node {node} reports url {url!r}: give its base URL, e.g. "
                   "http://127.0.0.1:7072")
    replicas = body.get("replicas", {})
    if not isinstance(replicas, dict) or not all(
            isinstance(k, str) and isinstance(v, dict) for k, v in replicas.items()):
        raise _bad(f"node {node}: replicas must be an object of env name -> replica report")
    return node, url.rstrip("/"), replicas


def _bad(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)
