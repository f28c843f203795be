"""`tandem bench engine`: journal overhead against plain APSW, side by side in one run.

Both sides use the same durability (WAL, synchronous=FULL) and the same work: single-row
insert transactions. Rounds alternate between the sides and each side's median round is
reported, so machine noise (fsync latency varies a lot on VMs) hits both alike.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import apsw

from tandemdb.engine import Environment

PAYLOAD = "x" * 100
CREATE = "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"
INSERT = "INSERT INTO t(v) VALUES (?)"
# The same work on a table the exactness guards watch (engine/exactness.py): a NULL-able
# TEXT key and a column without a type, the most common schema that needs them; and on its
# twin that needs none (NOT NULL key, typed column) but has the same rows and index.
GUARDED = "CREATE TABLE t(id TEXT PRIMARY KEY, v)"
UNGUARDED = "CREATE TABLE t(id TEXT NOT NULL PRIMARY KEY, v TEXT)"


def _plain_round(conn: apsw.Connection, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(INSERT, (PAYLOAD,))
        conn.execute("COMMIT")
    return n / (time.perf_counter() - start)


def _session_floor_round(conn: apsw.Connection, n: int) -> float:
    """The least any session-based journal can cost: raw session + entry row, no sandbox."""
    start = time.perf_counter()
    for _ in range(n):
        session = apsw.Session(conn, "main")
        session.config(apsw.SQLITE_SESSION_OBJCONFIG_ROWID, 1)
        session.attach()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(INSERT, (PAYLOAD,))
        changeset = session.changeset()
        session.close()
        conn.execute("INSERT INTO journal(body) VALUES (?)", (changeset,))
        conn.execute("COMMIT")
    return n / (time.perf_counter() - start)


def _journaled_round(env: Environment, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        env.execute([(INSERT, [PAYLOAD])])
    return n / (time.perf_counter() - start)


def _guarded_round(env: Environment, n: int, start_id: int) -> float:
    start = time.perf_counter()
    for i in range(start_id, start_id + n):
        env.execute([("INSERT INTO t(id, v) VALUES (?, ?)", [f"k{i}", PAYLOAD])])
    return n / (time.perf_counter() - start)


def _group_round(env: Environment, n: int, group: int) -> float:
    start = time.perf_counter()
    done = 0
    while done < n:
        size = min(group, n - done)
        env.execute_group([[(INSERT, [PAYLOAD])]] * size)
        done += size
    return n / (time.perf_counter() - start)


def _apply_rate(source: Environment, replica: Environment) -> tuple[float, int]:
    batches = []
    after = 0
    while True:
        batch = source.read_journal(after, max_entries=1000)
        if not batch:
            break
        batches.append(batch)
        after = batch[-1].lsn
    start = time.perf_counter()
    for batch in batches:
        replica.apply(batch, sender_epoch=source.epoch)
    elapsed = time.perf_counter() - start
    count = sum(len(b) for b in batches)
    return count / elapsed, count


def run(transactions: int = 2000, rounds: int = 5, group: int = 32,
        progress: Callable[[str], None] | None = None) -> dict:
    """Run the benchmark in a temporary directory and return the JSON-ready figures."""
    say = progress or (lambda _msg: None)
    per_round = max(1, transactions // rounds)
    with tempfile.TemporaryDirectory(prefix="tandem-bench-") as tmp:
        plain = apsw.Connection(str(Path(tmp) / "plain.sqlite"))
        plain.execute("PRAGMA journal_mode=WAL")
        plain.execute("PRAGMA synchronous=FULL")
        plain.execute(CREATE)
        floor = apsw.Connection(str(Path(tmp) / "floor.sqlite"))
        floor.execute("PRAGMA journal_mode=WAL")
        floor.execute("PRAGMA synchronous=FULL")
        floor.execute(CREATE)
        floor.execute("CREATE TABLE journal(lsn INTEGER PRIMARY KEY, body BLOB)")
        env = Environment(Path(tmp) / "journaled")
        env.execute([CREATE])
        grouped = Environment(Path(tmp) / "grouped")
        grouped.execute([CREATE])
        guarded = Environment(Path(tmp) / "guarded")
        guarded.execute([GUARDED])
        twin = Environment(Path(tmp) / "twin")
        twin.execute([UNGUARDED])
        plain_rates, floor_rates, journaled_rates, group_rates = [], [], [], []
        guarded_rates, twin_rates = [], []
        for i in range(rounds):
            say(f"round {i + 1}/{rounds}: plain, session floor, journaled, guarded, "
                "group commit")
            plain_rates.append(_plain_round(plain, per_round))
            floor_rates.append(_session_floor_round(floor, per_round))
            journaled_rates.append(_journaled_round(env, per_round))
            guarded_rates.append(_guarded_round(guarded, per_round, i * per_round))
            twin_rates.append(_guarded_round(twin, per_round, i * per_round))
            group_rates.append(_group_round(grouped, per_round, group))
        say("replica applying the journal")
        replica = Environment(Path(tmp) / "replica")
        apply_rate, applied = _apply_rate(env, replica)
        assert replica.checksum() == env.checksum(), "replica must equal primary after apply"
        for closable in (plain, floor, env, grouped, guarded, twin, replica):
            closable.close()
    plain_tx = statistics.median(plain_rates)
    journaled_tx = statistics.median(journaled_rates)
    floor_tx = statistics.median(floor_rates)
    guarded_tx = statistics.median(guarded_rates)
    twin_tx = statistics.median(twin_rates)
    return {
        "bench": "engine",
        "durability": "WAL synchronous=FULL",
        "transactions_per_side": per_round * rounds,
        "rounds": rounds,
        "plain_tx_per_s": round(plain_tx, 1),
        "journaled_tx_per_s": round(journaled_tx, 1),
        "overhead_ratio": round(plain_tx / journaled_tx, 3),
        "session_floor_tx_per_s": round(floor_tx, 1),
        "floor_overhead_ratio": round(plain_tx / floor_tx, 3),
        "guarded_tx_per_s": round(guarded_tx, 1),
        "unguarded_twin_tx_per_s": round(twin_tx, 1),
        "guard_overhead_ratio": round(twin_tx / guarded_tx, 3),
        "group_commit_tx_per_s": round(statistics.median(group_rates), 1),
        "group_size": group,
        "apply_entries_per_s": round(apply_rate, 1),
        "applied_entries": applied,
    }
