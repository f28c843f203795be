"""Replay lost writes onto the current primary: those that conflict with nothing since.

`POST /v1/environments/{env}/lost/replay` (`tandem lost ENV --replay`). For each kept lost
write, oldest first, every row change is checked against the primary's row of the same key:

- **clean**: an insert whose key is free; an update whose row still holds the old values of
  the columns it changed (so changes to other columns since the fork are merged, not
  refused); a delete whose row still holds all its old values. When every change of the
  write is clean, they are applied together, as one new transaction, each guarded by those
  same values.
- **already**: the row already holds what the write left (an earlier replay, or the same
  change made again since): nothing to do. So replaying twice applies nothing twice.
- **conflict**: anything else (the row was changed since the fork, or the write touched
  files or the schema, or holds a value no SQL parameter can carry as it was: an infinite
  REAL or TEXT that is not UTF-8, tagged by engine/lost.py): listed with the table, key and
  reason, and left alone.

The bundle records which writes were replayed, and the lsn they were given.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from tandemdb.common.http import ApiError
from tandemdb.engine.lost import TAGS

from .catalog import Catalog, EnvState, iso_now, not_found
from .nodes import NodeClient
from .rejoin import LOST
from .store import Store, Txn
from .topology import Topology

log = logging.getLogger("tandem.controller.replay")


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def where(values: dict[str, Any]) -> tuple[str, list]:
    return " AND ".join(f"{quote(c)} IS ?" for c in values), list(values.values())


class Replayer:
    def __init__(self, store: Store, catalog: Catalog, topology: Topology,
                 nodes: NodeClient) -> None:
        self.store, self.catalog, self.topology, self.nodes = store, catalog, topology, nodes

    async def replay(self, env: str) -> dict:
        record = await asyncio.to_thread(self.catalog.get, env)
        if record is None:
            raise not_found(env)
        primary = record.primary
        if record.state != EnvState.ACTIVE or primary is None:
            raise ApiError(409, "busy", f"environment {env!r} is {record.state}; replay "
                                        "once its operation has ended")
        node, url = primary.node, self.topology.call_url(primary.node)
        bundles = await asyncio.to_thread(self.store.list, f"{LOST}{env}/")
        applied: list[int] = []
        already: list[int] = []
        conflicts: list[dict] = []
        for key, item in bundles.items():
            bundle = item.value
            for entry in bundle["entries"]:
                if entry.get("replayed"):
                    already.append(entry["lsn"])
                    continue
                state, found = await self._check(node, url, env, entry)
                if state == "clean":
                    state, found = await self._apply(node, url, env, entry)
                if state in ("clean", "already"):
                    entry["replayed"] = {"at": iso_now(), "lsn": found}
                    (applied if state == "clean" else already).append(entry["lsn"])
                else:
                    conflicts.extend(found)
            done = await asyncio.to_thread(
                self.store.commit, Txn().expect(key, item.version).put(key, bundle))
            if done is None:
                raise ApiError(409, "conflict", f"the lost writes of {env!r} were changed by "
                                                "another replay; run it again")
        log.info("environment %s: replayed %d lost write(s), %d already there, %d conflicting "
                 "row(s) left alone", env, len(applied), len(already), len(conflicts))
        return {"environment": env, "applied": applied, "already": already,
                "conflicts": conflicts}

    async def _check(self, node: str, url: str, env: str, entry: dict) -> tuple[str, Any]:
        """`clean`, `already`, or `conflict` with the conflicting rows."""
        if entry["ddl"]:
            return "conflict", [{"lsn": entry["lsn"], "table": None, "op": "ddl", "key": None,
                                 "reason": "a schema change: replay it by hand"}]
        statements, checked = [], []
        for change in entry["changes"]:
            if change["table"].startswith("_tandem"):
                return "conflict", [{"lsn": entry["lsn"], "table": change["table"],
                                     "op": change["op"], "key": change["key"],
                                     "reason": "a file change: put the file again by hand"}]
            if unreplayable(change):
                return "conflict", [{"lsn": entry["lsn"], "table": change["table"],
                                     "op": change["op"], "key": change["key"],
                                     "reason": "it holds an infinite REAL or text that is not "
                                               "UTF-8 ({\"$real\"} or {\"$text_hex\"}), "
                                               "which a replay cannot write back exactly: "
                                               "replay it by hand"}]
            columns = sorted({*(change["before"] or {}), *(change["after"] or {})})
            clause, params = where(change["key"])
            statements.append({"sql": f"SELECT {', '.join(map(quote, columns))} FROM "
                                      f"{quote(change['table'])} WHERE {clause}",
                               "params": params})
            checked.append(columns)
        reply = await self.nodes.sql(node, url, env, statements)
        if reply.status == 422 and (reply.body or {}).get("error", {}).get("code") == \
                "invalid_text":
            # The primary's current row holds text that is not UTF-8: it cannot be compared,
            # so the write is left for a person, like any other conflict.
            return "conflict", [{"lsn": entry["lsn"], "table": c["table"], "op": c["op"],
                                 "key": c["key"], "reason": "the current row holds text that "
                                 "is not UTF-8, which cannot be compared: replay it by hand"}
                                for c in entry["changes"]]
        if not reply.ok:
            raise ApiError(503, "primary_unavailable",
                           f"cannot read the primary to check for conflicts: {reply.problem}; "
                           "nothing was replayed from this write on, run the replay again")
        states, found = [], []
        for change, columns, result in zip(entry["changes"], checked, reply.body["results"],
                                           strict=True):
            row = dict(zip(columns, result["rows"][0], strict=True)) if result["rows"] else None
            state = classify(change, row)
            states.append(state)
            if state == "conflict":
                found.append({"lsn": entry["lsn"], "table": change["table"],
                              "op": change["op"], "key": change["key"],
                              "reason": reason(change, row)})
        if found:
            return "conflict", found
        return ("already" if all(s == "already" for s in states) else "clean"), None

    async def _apply(self, node: str, url: str, env: str, entry: dict) -> tuple[str, Any]:
        statements = [statement(change) for change in entry["changes"]]
        reply = await self.nodes.sql(node, url, env, statements)
        guarded = [r["rows_affected"] for r in reply.body.get("results", [])] if reply.ok \
            else []
        if reply.ok and all(n == 1 for n in guarded):
            return "clean", reply.body["lsn"]
        problem = reply.problem or "a row changed between the check and the write"
        return "conflict", [{"lsn": entry["lsn"], "table": None, "op": None, "key": None,
                             "reason": f"changed meanwhile ({problem})"}]


def unreplayable(change: dict) -> bool:
    """A value the lost-writes description had to tag: written back as a parameter, it would
    become something else (text "Infinity", or no valid text at all)."""
    found = [*change["key"].values(), *(change["before"] or {}).values(),
             *(change["after"] or {}).values()]
    return any(type(v) is dict and len(v) == 1 and next(iter(v)) in TAGS for v in found)


def matches(row: dict | None, values: dict | None) -> bool:
    return row is not None and values is not None and all(row.get(c) == v
                                                          for c, v in values.items())


def classify(change: dict, row: dict | None) -> str:
    op, before, after = change["op"], change["before"], change["after"]
    if op == "insert":
        return "clean" if row is None else "already" if matches(row, after) else "conflict"
    if op == "update":
        return ("clean" if matches(row, before) else "already" if matches(row, after)
                else "conflict")
    return "clean" if matches(row, before) else "already" if row is None else "conflict"


def reason(change: dict, row: dict | None) -> str:
    if change["op"] == "insert":
        return "a different row with this key was written since the fork"
    if row is None:
        return "the row was deleted since the fork"
    return "the row was changed since the fork"


def statement(change: dict) -> dict:
    table, before, after = quote(change["table"]), change["before"], change["after"]
    if change["op"] == "insert":
        columns = list(after)
        return {"sql": f"INSERT INTO {table}({', '.join(map(quote, columns))}) VALUES "
                       f"({', '.join('?' for _ in columns)})", "params": list(after.values())}
    clause, params = where(before)
    if change["op"] == "delete":
        return {"sql": f"DELETE FROM {table} WHERE {clause}", "params": params}
    sets = {c: v for c, v in after.items() if c not in change["key"]}
    return {"sql": f"UPDATE {table} SET {', '.join(f'{quote(c)} = ?' for c in sets)} "
                   f"WHERE {clause}", "params": [*sets.values(), *params]}
