"""A Tandem node: one server process of a region hosting replicas of many environments.

Entry point: `app.main` (`python -m tandemdb.node --data DIR --name NODE`). See
docs/architecture.md "Node" for the contract it serves.
"""
