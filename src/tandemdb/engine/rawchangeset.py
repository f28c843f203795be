"""Reading a changeset's rows without decoding TEXT as UTF-8 first.

`apsw.Changeset.iter` turns every TEXT value into a Python str and fails on the whole change
when one holds bytes that are not UTF-8 (a tenant can store them: `CAST(x'ff' AS TEXT)`).
Describing lost writes must not fail on them, so this reads the changeset format itself
(documented at the top of SQLite's sqlite3session.c) and keeps such text, tagged, as
`{"$text_hex": "…"}`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import apsw

INVALID_TEXT = "$text_hex"  # tags TEXT that is not valid UTF-8, by its bytes in hex
_OPS = {apsw.SQLITE_INSERT: "INSERT", apsw.SQLITE_UPDATE: "UPDATE",
        apsw.SQLITE_DELETE: "DELETE"}


@dataclass(frozen=True, slots=True)
class RawChange:
    """The parts of `apsw.TableChange` that lost-writes descriptions use."""

    name: str
    op: str
    column_count: int
    pk_columns: set[int]
    old: tuple | None
    new: tuple | None


def text_value(raw: bytes) -> str | dict[str, str]:
    """TEXT as str, or tagged by its hex when it is not valid UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return {INVALID_TEXT: raw.hex()}


def varint(buf: bytes, i: int) -> tuple[int, int]:
    """SQLite's varint: 7 bits a byte, high bit set means more; a 9th byte has all 8."""
    value = 0
    for k in range(8):
        byte = buf[i + k]
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, i + k + 1
    return (value << 8) | buf[i + 8], i + 9


def _value(buf: bytes, i: int) -> tuple[Any, int]:
    kind = buf[i]
    i += 1
    if kind == 0:
        return apsw.no_change, i
    if kind == 1:
        return struct.unpack_from(">q", buf, i)[0], i + 8
    if kind == 2:
        return struct.unpack_from(">d", buf, i)[0], i + 8
    if kind == 5:
        return None, i
    if kind in (3, 4):
        size, i = varint(buf, i)
        raw = bytes(buf[i:i + size])
        return (text_value(raw) if kind == 3 else raw), i + size
    raise ValueError(f"changeset value of unknown type {kind} at byte {i - 1}")


def skip_value(buf: bytes, i: int) -> int:
    """Where the value at `i` ends, without decoding it."""
    kind = buf[i]
    if kind in (1, 2):
        return i + 9
    if kind in (3, 4):
        size, i = varint(buf, i + 1)
        return i + size
    if kind in (0, 5):
        return i + 1
    raise ValueError(f"changeset value of unknown type {kind} at byte {i}")


def _record(buf: bytes, i: int, count: int) -> tuple[tuple, int]:
    values = []
    for _ in range(count):
        value, i = _value(buf, i)
        values.append(value)
    return tuple(values), i


def iterate(changeset: bytes) -> list[RawChange]:
    """Every change of a changeset (not a patchset), in order."""
    buf, i, out = bytes(changeset), 0, []
    name, count, pk = "", 0, set()
    while i < len(buf):
        if buf[i] == ord("T"):
            count, i = varint(buf, i + 1)
            pk = {c for c in range(count) if buf[i + c]}
            end = buf.index(0, i + count)
            name, i = buf[i + count:end].decode("utf-8", "replace"), end + 1
            continue
        op = _OPS.get(buf[i])
        if op is None:
            raise ValueError(f"changeset holds an unknown operation {buf[i]} at byte {i}")
        i += 2  # the operation and its "indirect" flag
        old = new = None
        if op != "INSERT":
            old, i = _record(buf, i, count)
        if op != "DELETE":
            new, i = _record(buf, i, count)
        out.append(RawChange(name, op, count, pk, old, new))
    return out
