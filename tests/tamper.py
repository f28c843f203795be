"""Change a replica's data behind its node's back: how tests make an entry unappliable
without relying on an engine bug."""

from __future__ import annotations

from pathlib import Path

import apsw

from tandemdb.engine.schema import DB_FILE


def tamper(data_dir: str | Path, node: str, env: str, sql: str) -> None:
    """Run `sql` directly on `node`'s SQLite file of `env`, while the node runs."""
    path = Path(data_dir) / "nodes" / node / "envs" / env / DB_FILE
    conn = apsw.Connection(str(path))
    try:
        conn.set_busy_timeout(5000)
        conn.execute(sql)
    finally:
        conn.close()
