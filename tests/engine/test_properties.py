"""Property: any mix of DDL, DML and file writes replicates to an equal checksum, and
rewinding k entries lands exactly on the state the primary had k entries ago."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tandemdb.engine import EngineError, Environment

from .conftest import replicate

TABLE_KINDS = {
    "intpk": "(k INTEGER PRIMARY KEY, v)",
    "rowid": "(k, v)",
    "textpk": "(k TEXT PRIMARY KEY, v)",
    "without_rowid": "(k INTEGER PRIMARY KEY, v) WITHOUT ROWID",
}
PATHS = ["a", "b", "dir/c"]

values = st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False),
                   st.text(max_size=12), st.binary(max_size=12))
table = st.integers(0, 5)
key = st.integers(0, 12)
sql_op = st.one_of(
    st.tuples(st.just("create"), st.sampled_from(sorted(TABLE_KINDS))),
    st.tuples(st.just("alter"), table),
    st.tuples(st.just("insert"), table, key, values),
    st.tuples(st.just("insert"), table, key, values),
    st.tuples(st.just("update"), table, key, values),
    st.tuples(st.just("delete"), table, key),
)
file_op = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(PATHS), st.binary(max_size=40)),
    st.tuples(st.just("rm"), st.sampled_from(PATHS)),
)
transaction = st.one_of(st.lists(sql_op, min_size=1, max_size=4), file_op.map(lambda o: [o]))


class Model:
    """Turns abstract ops into SQL against the tables created so far."""

    def __init__(self) -> None:
        self.tables: list[tuple[str, str]] = []  # (name, kind)
        self.extra: dict[str, int] = {}

    def statement(self, op: tuple) -> tuple[str, list] | None:
        if op[0] == "create":
            name = f"tb{len(self.tables)}"
            self.tables.append((name, op[1]))
            self.extra[name] = 0
            return f"CREATE TABLE {name}{TABLE_KINDS[op[1]]}", []
        if not self.tables:
            return None
        name, kind = self.tables[op[1] % len(self.tables)]
        k = str(op[2]) if kind == "textpk" and len(op) > 2 else (op[2] if len(op) > 2 else None)
        column = f"c{self.extra[name]}" if self.extra[name] else "v"
        match op[0]:
            case "alter":
                self.extra[name] += 1
                return f"ALTER TABLE {name} ADD COLUMN c{self.extra[name]}", []
            case "insert":
                return f"INSERT INTO {name}(k, v) VALUES (?, ?)", [k, op[3]]
            case "update":
                return f"UPDATE {name} SET {column} = ? WHERE k = ?", [op[3], k]
            case "delete":
                return f"DELETE FROM {name} WHERE k = ?", [k]
        raise AssertionError(op)


def run(env: Environment, model: Model, tx: list[tuple]) -> None:
    try:
        if tx[0][0] == "put":
            env.put_file(tx[0][1], tx[0][2])
        elif tx[0][0] == "rm":
            env.delete_file(tx[0][1])
        else:
            statements = [s for s in map(model.statement, tx) if s is not None]
            if statements:
                env.execute(statements)
    except EngineError:
        pass  # rolled back (a duplicate key, a missing file): no entry, nothing changed


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(transactions=st.lists(transaction, min_size=1, max_size=14), data=st.data())
def test_replica_equals_primary_and_rewind_is_exact(transactions, data):
    with tempfile.TemporaryDirectory() as tmp:
        primary = Environment(Path(tmp) / "p")
        model = Model()
        sums = {0: primary.checksum().total}
        for tx in transactions:
            before = primary.last_lsn
            run(primary, model, tx)
            assert primary.last_lsn in (before, before + 1)
            sums[primary.last_lsn] = primary.checksum().total

        replica = Environment(Path(tmp) / "r")
        replicate(primary, replica)
        assert replica.checksum().total == primary.checksum().total

        entries = primary.read_journal(0, max_entries=10_000)
        rewindable = 0
        for entry in reversed(entries):
            if entry.ddl:
                break
            rewindable += 1
        k = data.draw(st.integers(0, rewindable), label="k")
        target = primary.last_lsn - k
        lost = replica.rewind(target)
        assert [e.lsn for e in lost] == list(range(target + 1, primary.last_lsn + 1))
        assert replica.checksum().total == sums[target]
        replica.apply(lost)
        assert replica.checksum().total == primary.checksum().total
        primary.close()
        replica.close()
