"""The controller: Tandem's control plane (docs/architecture.md, "Controller").

Entry point: `app.main` (`python -m tandemdb.controller --data DIR`). One module per noun:

| module | noun |
|---|---|
| `store/` | `Store`, the coordination seam (SQLite backend now, etcd later) |
| `topology.py` | regions, pairs, nodes, node health, placement |
| `records.py` | `EnvRecord`, `ReplicaRef`: the catalog's records, typed |
| `catalog.py` | environment records: reading, compare-and-set, create validation |
| `status.py` | live replica status from heartbeats, merged into views |
| `reconcile.py` | what each node should host (heartbeat answers, admin PUT bodies) |
| `routing.py` | the routing table served by long poll |
| `operations.py` | `Operation`: durable, resumable workflows; kinds as step tables |
| `environments.py` | creating and deleting environments (operations of two kinds) |
| `failover/` | failover of one environment: planned and forced step tables, settling |
| `regions.py`, `region_rules.py`, `outage.py` | region failover/failback, what may move |
| `rejoin.py`, `replay.py` | a forced failover's old primary rejoins; its lost writes |
| `events.py` | the durable event log and its long poll |
| `webhooks.py` | webhook registrations, the outbox, signed delivery with backoff |
| `nodes.py` | admin calls to nodes |
| `api.py` | the HTTP routes |
| `app.py` | wiring, health watch, resume at start, process entry |
"""
