"""Differential replication fuzzer (issue 9): any tenant SQL must replicate exactly.

A Hypothesis state machine builds schemas (fuzz_schema.py) and runs transactions of row
changes and DDL (fuzz_dml.py) on a primary Environment. After every transaction it ships the
journal to a replica and checks the exactness invariants of docs/design.md:

- the replica's logical checksum equals the primary's (invariant 4);
- the lsn moved if and only if the content changed: a commit that changed content made exactly
  one entry, one that changed nothing made none (unless it ran DDL, whose entry may leave the
  content as it was, e.g. CREATE then DROP INDEX); a transaction the engine refused
  (EngineError) changed neither content nor lsn (invariants 8, 9);
- now and then a third replica (the mirror) is rewound with the inverted changesets to an
  earlier lsn and must equal the primary's checksum at that lsn, then rolls forward again
  to equal it now; a rewind over DDL must be refused with RewindImpossible and change nothing;
- a group commit (execute_group, the node's batcher path) does what the same transactions do
  one by one with execute, on a twin restored from a snapshot;
- a restart (reopening the primary) keeps the lsn and the content.

Foreign keys are generated with ON DELETE/UPDATE actions, but the engine runs with
`PRAGMA foreign_keys` off (SQLite's default, and tenants may not set PRAGMAs), so their
actions never fire: only the schema text replicates.

Anything else that escapes the engine (an apsw error, a UnicodeDecodeError) is a bug and
fails the test. The normal suite runs a bounded, derandomized campaign (the same examples
every run: 250 examples of up to 25 steps, 20-25 s here). The soak form is random and
much longer (and shrinks a failure, which can take minutes):

    TANDEM_SOAK=1 .venv/bin/python -m pytest -m soak tests/engine/test_replication_fuzz.py \
        --hypothesis-show-statistics      # 5,000 examples; TANDEM_SOAK=N runs N examples

Every example the fuzzer shrank to is kept in test_fuzz_regressions.py.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, event, given, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
)

from tandemdb.engine import EngineError, Environment, RewindImpossible

from . import fuzz_dml, fuzz_schema
from .conftest import copy_blobs, replicate
from .fuzz_schema import Schema, Stmt

# Environments fsync every commit; in memory-backed storage that costs nothing.
FAST_TMP = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
# No explain phase: re-running a failing example per step costs minutes here, the notes
# (each transaction and its outcome) already say what happened.
_PHASES = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink]
BOUNDED = settings(max_examples=250, stateful_step_count=25, deadline=None, derandomize=True,
                   database=None, suppress_health_check=_HEALTH, print_blob=True,
                   phases=_PHASES)


def soak_settings(raw: str) -> settings:
    """TANDEM_SOAK=1 runs 5,000 random examples; TANDEM_SOAK=N runs N."""
    examples = int(raw) if raw.isdigit() and int(raw) > 1 else 5000
    return settings(max_examples=examples, stateful_step_count=50, deadline=None,
                    derandomize=False, suppress_health_check=_HEALTH, print_blob=True,
                   phases=_PHASES)


def _checksum(env: Environment) -> str:
    return env.checksum().total


def replicate_upto(source: Environment, target: Environment, lsn: int) -> None:
    """Ship the entries after the target's last lsn, up to `lsn`, one apply call."""
    entries = [e for e in source.read_journal(target.last_lsn, max_entries=1000) if e.lsn <= lsn]
    copy_blobs(source, target, entries)
    target.apply(entries, sender_epoch=source.epoch)


class ReplicationMachine(RuleBasedStateMachine):
    """One primary, a replica fed after every step, and a mirror that rewinds."""

    def __init__(self) -> None:
        super().__init__()
        self._tmp = tempfile.TemporaryDirectory(prefix="tandem-fuzz-", dir=FAST_TMP)
        root = self.root = Path(self._tmp.name)
        self.primary = Environment(root / "primary")
        self.replica = Environment(root / "replica")
        self.mirror = Environment(root / "mirror")
        self.schema = Schema()
        self.sums = {0: _checksum(self.primary)}  # the primary's checksum at each lsn
        self.last_ddl_lsn = 0

    def teardown(self) -> None:
        for env in (self.primary, self.replica, self.mirror):
            env.close()
        self._tmp.cleanup()

    # -- the step and its checks -----------------------------------------------------------
    def commit(self, statements: list[Stmt], staged: Schema) -> None:
        """Run one transaction on the primary, check the lsn rule, replicate, compare."""
        note(f"execute({statements!r})")
        self.step(lambda: self.primary.execute(statements), staged)

    def step(self, write: Callable[[], object], staged: Schema, *, touch: bool = False) -> None:
        """Run one write on the primary, check the lsn rule, replicate, compare.

        `touch`: the write may change only what the checksum leaves out (a file put again
        with the same content moves its modified_at), so an entry with no visible change is
        fine."""
        before_lsn = self.primary.last_lsn
        before = self.sums[before_lsn]
        try:
            write()
        except EngineError as err:
            event(f"refused: {err.code}")
            note(f"  -> refused: {err.code}: {err}")
            assert self.primary.last_lsn == before_lsn, "a refused transaction moved the lsn"
            assert _checksum(self.primary) == before, "a refused transaction changed content"
            return
        self.schema = staged
        after = _checksum(self.primary)
        lsn = self.primary.last_lsn
        if after != before:
            event("committed: content changed")
            assert lsn == before_lsn + 1, (
                f"content changed but the lsn went {before_lsn} -> {lsn}: a write the journal "
                "does not carry")
        elif lsn != before_lsn:
            event("committed: DDL, content unchanged")
            assert lsn == before_lsn + 1
            assert touch or self.primary.read_journal(before_lsn)[0].ddl, (
                f"lsn {lsn} was made by a transaction that changed nothing")
        else:
            event("committed: nothing changed")
        if lsn != before_lsn and self.primary.read_journal(before_lsn)[0].ddl:
            self.last_ddl_lsn = lsn
        self.sums[lsn] = after
        replicate(self.primary, self.replica)
        assert self.replica.last_lsn == lsn
        assert _checksum(self.replica) == after, (
            f"replica differs from the primary at lsn {lsn}")

    # -- rules -----------------------------------------------------------------------------
    @initialize(data=st.data())
    def first_table(self, data: st.DataObject) -> None:
        staged = self.schema.staged()
        self.commit([fuzz_schema.create_table(data.draw, staged)], staged)

    @precondition(lambda self: self.schema.tables)
    @rule(data=st.data())
    def write(self, data: st.DataObject) -> None:
        """One to four row changes in one transaction."""
        staged = self.schema.staged()
        statements: list[Stmt] = []
        for _ in range(data.draw(st.integers(1, 4), label="statements")):
            statements += fuzz_dml.dml(data.draw, staged)
        self.commit(statements, staged)

    @precondition(lambda self: self.schema.tables)
    @rule(data=st.data())
    def write_group(self, data: st.DataObject) -> None:
        """Group commit, the node's batcher path: two or three transactions of row changes in
        one SQLite commit must do what the same transactions do one by one. A twin restored
        from a snapshot runs them with execute; outcomes and lsns must agree, and checksums
        too unless random() made the rows (or SQLite picks random rowids: the largest is
        taken)."""
        txs = [fuzz_dml.dml(data.draw, self.schema.staged())
               for _ in range(data.draw(st.integers(2, 3), label="transactions"))]
        note(f"execute_group({txs!r})")
        before_lsn = self.primary.last_lsn
        snap = self.primary.snapshot(self.root / f"twin-{before_lsn}.sqlite")
        twin = Environment.restore(snap.path, self.root / "twin", self.primary.blobs.get)
        try:
            repeatable = "random" not in repr(txs) and not self.schema.random
            repeatable = repeatable and not self.rowids_maxed(twin)
            outcomes = self.primary.execute_group(txs)
            for tx, outcome in zip(txs, outcomes, strict=True):
                try:
                    alone: object = twin.execute(tx).lsn
                except EngineError as err:
                    alone = err.code
                grouped = outcome.code if isinstance(outcome, EngineError) else outcome.lsn
                note(f"  -> grouped {grouped!r}, alone {alone!r}")
                assert grouped == alone, "a transaction did otherwise in a group than alone"
            lsn = self.primary.last_lsn
            assert twin.last_lsn == lsn
            if repeatable and not self.rowids_maxed(self.primary):
                assert _checksum(twin) == _checksum(self.primary)
            event(f"group: {sum(not isinstance(o, EngineError) for o in outcomes)} committed")
        finally:
            twin.close()
            shutil.rmtree(self.root / "twin")
            Path(snap.path).unlink()
        for entry in self.primary.read_journal(before_lsn, max_entries=10):
            replicate_upto(self.primary, self.replica, entry.lsn)
            self.sums[entry.lsn] = _checksum(self.replica)  # checked against the primary below
        assert self.sums[lsn] == _checksum(self.primary)

    def rowids_maxed(self, env: Environment) -> bool:
        """Once a table holds rowid 2**63-1, SQLite picks new rowids at random."""
        return any(env.execute([f"SELECT 1 FROM {t.name} WHERE rowid = 9223372036854775807"])
                   .results[0].rows for t in self.schema.tables.values() if not t.without_rowid)

    @rule(data=st.data())
    def change_schema(self, data: st.DataObject) -> None:
        """DDL, with row changes before and after it in the same transaction."""
        staged = self.schema.staged()
        statements: list[Stmt] = []
        if staged.tables and data.draw(st.booleans(), label="rows before"):
            statements += fuzz_dml.dml(data.draw, staged)
        statements += fuzz_schema.ddl(data.draw, staged)
        if staged.tables and data.draw(st.booleans(), label="rows after"):
            statements += fuzz_dml.dml(data.draw, staged)
        self.commit(statements, staged)

    @rule(path=st.sampled_from(["a", "d/b"]),
          content=st.binary(max_size=8) | st.binary(max_size=8) | st.none())
    def file(self, path: str, content: bytes | None) -> None:
        """Files are rows of _tandem_files: the same rules hold for them."""
        if content is None:
            self.step(lambda: self.primary.delete_file(path), self.schema)
        else:
            self.step(lambda: self.primary.put_file(path, content), self.schema, touch=True)

    @precondition(lambda self: self.primary.last_lsn > 0)
    @rule(data=st.data())
    def rewind_mirror(self, data: st.DataObject) -> None:
        """Rewind the mirror to an earlier lsn, compare, and roll it forward again."""
        replicate(self.primary, self.mirror)
        last = self.primary.last_lsn
        low = self.last_ddl_lsn if data.draw(st.integers(0, 4), label="over ddl") else 0
        target = data.draw(st.integers(low, last - 1) if low < last else st.just(last),
                           label="rewind to")
        crosses_ddl = any(e.ddl for e in self.primary.read_journal(
            target, max_entries=1 << 20, max_bytes=1 << 40))
        if crosses_ddl:
            event("rewind: refused over DDL")
            with pytest.raises(RewindImpossible):
                self.mirror.rewind(target)
            assert self.mirror.last_lsn == last and _checksum(self.mirror) == self.sums[last]
            return
        event("rewind: done")
        lost = self.mirror.rewind(target)
        assert [e.lsn for e in lost] == list(range(target + 1, last + 1))
        assert _checksum(self.mirror) == self.sums[target], (
            f"rewinding lsn {target + 1}..{last} did not restore the state at lsn {target}")
        self.mirror.apply(lost)
        assert _checksum(self.mirror) == self.sums[last]

    @rule()
    def reopen_primary(self) -> None:
        """A restart keeps the lsn and the content."""
        directory, lsn = self.primary.directory, self.primary.last_lsn
        self.primary.close()
        self.primary = Environment(directory)
        assert self.primary.last_lsn == lsn and _checksum(self.primary) == self.sums[lsn]


@settings(max_examples=60, derandomize=True, database=None, deadline=None)
@given(data=st.data(), key=st.booleans())
def test_alter_keeps_a_column_for_the_statements_after_it(data, key):
    """A generator bug the soak run found: DROP COLUMN of a one-column table (or of a key)
    left the staged model without columns, and the rows drawn after it in the same
    transaction failed with "Cannot sample from a length-zero sequence"."""
    schema = Schema()
    schema.tables["t1"] = fuzz_schema.Table("t1", [fuzz_schema.Column("c0", "INT")],
                                            pk=["c0"] if key else [])
    statement, _ = fuzz_schema.alter_rename_drop(data.draw, schema, schema.tables["t1"])
    assert all(t.columns for t in schema.tables.values()), statement
    fuzz_dml.dml(data.draw, schema)


_SOAK = os.environ.get("TANDEM_SOAK", "")
ReplicationMachine.TestCase.settings = soak_settings(_SOAK) if _SOAK else BOUNDED
TestReplicationFuzz = pytest.mark.soak(ReplicationMachine.TestCase)
