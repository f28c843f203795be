"""Replaying journal segments on a replica: forward (apply) and backward (rewind).

Conflicts are never ignored: the first one aborts the changeset and is reported with its
table and key, because a conflict means the replica's state is not what the entry was
recorded against (docs/design.md, invariant 4).
"""

from __future__ import annotations

import apsw

from .errors import ApplyConflict
from .journal import DDL, Segment
from .schema import table_exists

_REASONS = {
    apsw.SQLITE_CHANGESET_DATA: "row differs from the recorded old values",
    apsw.SQLITE_CHANGESET_NOTFOUND: "row not found",
    apsw.SQLITE_CHANGESET_CONFLICT: "row already exists",
    apsw.SQLITE_CHANGESET_CONSTRAINT: "constraint failed",
    apsw.SQLITE_CHANGESET_FOREIGN_KEY: "foreign key constraint failed",
}


def _key(change: apsw.TableChange) -> tuple | None:
    try:
        values = change.old if change.old is not None else change.new
    except UnicodeDecodeError:  # a value is TEXT but not UTF-8: report the conflict unkeyed
        return None
    if values is None:
        return None
    return tuple(values[i] for i in sorted(change.pk_columns))


def apply_changeset(conn: apsw.Connection, changeset: bytes, *, lsn: int) -> None:
    """Apply one changeset strictly; raise ApplyConflict naming table and key on any conflict."""
    problems: list[ApplyConflict] = []

    def table_present(name: str) -> bool:
        if table_exists(conn, name):
            return True
        problems.append(ApplyConflict(
            f"lsn {lsn}: table {name!r} does not exist on this replica", table=name))
        return False

    def conflict(reason: int, change: apsw.TableChange) -> int:
        key = _key(change)
        why = _REASONS.get(reason, f"conflict {reason}")
        problems.append(ApplyConflict(
            f"lsn {lsn}: {change.op} on table {change.name!r} key {key!r}: {why}",
            table=change.name, key=key))
        return apsw.SQLITE_CHANGESET_ABORT

    try:
        apsw.Changeset.apply(changeset, conn, filter=table_present, conflict=conflict,
                             flags=apsw.SQLITE_CHANGESETAPPLY_NOSAVEPOINT)
    except apsw.AbortError:
        if not problems:
            raise
    if problems:
        raise problems[0]


def replay_segments(conn: apsw.Connection, segments: tuple[Segment, ...], *, lsn: int) -> None:
    """Re-run an entry: DDL text and changesets in their recorded order."""
    for kind, payload in segments:
        if kind == DDL:
            conn.execute(payload, can_cache=False)  # type: ignore[arg-type]
        else:
            apply_changeset(conn, payload, lsn=lsn)  # type: ignore[arg-type]


def undo_segments(conn: apsw.Connection, segments: tuple[Segment, ...], *, lsn: int) -> None:
    """Undo an entry with inverted changesets, newest first. Callers refuse DDL beforehand."""
    for kind, payload in reversed(segments):
        if kind == DDL:
            raise AssertionError("undo_segments called on an entry with DDL")
        apply_changeset(conn, apsw.Changeset.invert(payload), lsn=lsn)
