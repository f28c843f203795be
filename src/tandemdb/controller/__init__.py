"""The controller: Tandem's control plane (docs/architecture.md, "Controller").

Entry point: `app.main` (`python -m tandemdb.controller --data DIR`). One module per noun:

| module | noun |
|---|---|
| `store/` | `Store`, the coordination seam (SQLite backend now, etcd later) |
| `topology.py` | regions, pairs, nodes, node health, placement |
| `catalog.py` | environment records and their validation |
| `status.py` | live replica status from heartbeats, merged into views |
| `reconcile.py` | what each node should host (heartbeat answers, admin PUT bodies) |
| `routing.py` | the routing table served by long poll |
| `operations.py` | `Operation`: durable, resumable workflows and their runner |
| `environments.py` | creating and deleting environments (operations of two kinds) |
| `events.py` | the durable event log and its long poll |
| `webhooks.py` | webhook registrations, the outbox, signed delivery with backoff |
| `nodes.py` | admin calls to nodes |
| `api.py` | the HTTP routes |
| `app.py` | wiring, health watch, resume at start, process entry |
"""
