"""kill -9 in the middle of writes (docs/design.md, invariants 1, 4, 5 and 6).

A child process writes rows and files as fast as it can and prints each acknowledged lsn.
The parent kills it with SIGKILL at an arbitrary point, reopens the environment and checks
that every acknowledged write survived, the journal has no gap, and a replica fed the whole
journal ends with the same logical checksum. Several rounds hit different kill points.
"""

from __future__ import annotations

import os
import random
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import apsw

from tandemdb.engine import Environment, JournalEntry
from tandemdb.engine.blobstore import digest_of

ROUNDS = 8
READ_SECONDS = 1.5
START_SECONDS = 30.0
READ_LINES = 200
# Let the writer run on a little after the last line read, so kills land mid-commit too.
MAX_KILL_DELAY = 0.01

# file_data() must stay identical to the copy in CHILD_CODE.
CHILD_CODE = """
import sys
from tandemdb.engine import Environment

def file_data(i):
    return (f"file {i}\\n" * (i % 13 + 1)).encode()

env = Environment(sys.argv[1])
i = int(sys.argv[2])
if i == 1:
    env.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL)"])
while True:
    res = env.execute([("INSERT INTO t(id, v) VALUES (?, ?)", [i, "x"])])
    print("row", res.lsn, i, flush=True)
    if i % 10 == 0:
        res = env.put_file(f"f/{i}", file_data(i))
        print("file", res.lsn, i, flush=True)
    i += 1
"""


def file_data(i: int) -> bytes:
    return (f"file {i}\n" * (i % 13 + 1)).encode()


def run_and_kill(env_dir: Path, first_id: int) -> list[tuple[str, int, int]]:
    """Start a writer, let it run, SIGKILL it; return every (kind, lsn, id) it printed."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD_CODE, str(env_dir), str(first_id)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    out = bytearray()
    # The child's start-up (imports, the environment) gets its own, generous wait on a busy
    # machine; the writing it is killed in the middle of then gets READ_SECONDS.
    deadline = time.monotonic() + START_SECONDS
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while out.count(b"\n") < READ_LINES and (left := deadline - time.monotonic()) > 0:
            if sel.select(timeout=left):
                chunk = os.read(proc.stdout.fileno(), 1 << 16)
                if not chunk:
                    break  # the child ended on its own: reported below
                if not out:
                    deadline = time.monotonic() + READ_SECONDS
                out += chunk
    time.sleep(random.uniform(0, MAX_KILL_DELAY))
    os.kill(proc.pid, signal.SIGKILL)
    out += proc.stdout.read()  # what it printed before dying, still in the pipe
    proc.wait(timeout=10)
    stderr = proc.stderr.read().decode(errors="replace")
    proc.stdout.close()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, f"writer died by itself:\n{stderr}"
    # A line cut short by the kill was never fully printed, so never counted as acknowledged.
    complete = out[: out.rfind(b"\n") + 1].decode().splitlines()
    printed = [(kind, int(lsn), int(i)) for kind, lsn, i in (ln.split() for ln in complete)]
    assert printed, f"writer printed nothing before the kill:\n{stderr}"
    return printed


def whole_journal(env: Environment) -> list[JournalEntry]:
    entries: list[JournalEntry] = []
    while batch := env.read_journal(entries[-1].lsn if entries else 0):
        entries.extend(batch)
    return entries


def inserted_ids(entry: JournalEntry) -> list[int]:
    """Primary keys of the rows of table t an entry inserts."""
    return [change.new[0] for changeset in entry.changesets
            for change in apsw.Changeset.iter(changeset)
            if change.name == "t" and change.op == "INSERT"]


def check_acknowledged(env: Environment, printed: list[tuple[str, int, int]],
                       journal: dict[int, JournalEntry]) -> None:
    """Invariants 1 and 6: every printed write is durable, at the lsn it was given."""
    ids = [row[0] for row in env.execute(["SELECT id FROM t ORDER BY id"]).results[0].rows]
    assert ids == list(range(1, len(ids) + 1)), "rows are missing or duplicated"
    lsns = [lsn for _, lsn, _ in printed]
    assert lsns == sorted(lsns) and len(set(lsns)) == len(lsns)
    # Only the write in flight when the kill came can be committed but unprinted.
    assert 0 <= env.last_lsn - lsns[-1] <= 1
    for kind, lsn, i in printed:
        assert lsn <= env.last_lsn
        if kind == "row":
            assert i in ids
            assert inserted_ids(journal[lsn]) == [i]
        else:
            data = file_data(i)
            assert env.get_file(f"f/{i}") == data
            assert digest_of(data) in journal[lsn].blobs


def test_sigkill_loses_no_acknowledged_write(tmp_path: Path) -> None:
    env_dir = tmp_path / "env"
    replica = Environment(tmp_path / "replica")
    next_id = 1
    for _ in range(ROUNDS):
        printed = run_and_kill(env_dir, next_id)
        env = Environment(env_dir)
        try:
            entries = whole_journal(env)
            # Invariant 5: one entry per lsn, 1..last_lsn, no gap and nothing after.
            assert [e.lsn for e in entries] == list(range(1, env.last_lsn + 1))
            check_acknowledged(env, printed, {e.lsn: e for e in entries})
            # Invariant 4: a replica fed the journal ends with equal content.
            fresh = [e for e in entries if e.lsn > replica.last_lsn]
            for entry in fresh:
                for digest in entry.blobs:
                    if env.blobs.has(digest):
                        replica.blobs.put(env.blobs.get(digest))
            assert replica.apply(fresh) == env.last_lsn
            assert replica.checksum().total == env.checksum().total
            next_id = env.execute(["SELECT max(id) FROM t"]).results[0].rows[0][0] + 1
        finally:
            env.close()
    replica.close()
