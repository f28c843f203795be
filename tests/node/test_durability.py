"""Lag, acknowledgements and recovery between real node processes: the RPO guard, a
secondary killed with SIGKILL while writes continue, journal truncation after
acknowledgement, and seeding a new secondary from a snapshot."""

from __future__ import annotations

from tandemdb.testing import IdWriter, NodeSender, poll_until

from .conftest import Cluster, unique


def test_rpo_guard_holds_writes_while_the_secondary_lags(live: Cluster) -> None:
    env = unique("guard")
    live.pair(env, rpo=0.3)
    live.ok_sql("west-1", env, "CREATE TABLE t(id INTEGER PRIMARY KEY)")
    live.wait_equal(env)
    live.pause("east-1")
    try:
        attempts = iter(range(1, 10**6))

        def refused():
            r = live.sql("west-1", env, ("INSERT INTO t VALUES (?)", [next(attempts)]))
            assert r.status_code in (200, 503), r.text
            return r if r.status_code == 503 else None

        r = poll_until(refused, 10, what="the RPO guard to refuse a write")
        error = r.json()["error"]
        assert error["code"] == "rpo_exceeded" and "east" in error["message"]
        assert r.headers["retry-after"] == "1"
        held = live.checksum("west-1", env)
        r = live.sql("west-1", env, ("INSERT INTO t VALUES (?)", [-1]))
        assert r.status_code == 503
        r = live.http.put(live.files_url("west-1", env, "f.txt"), content=b"x")
        assert r.status_code == 503 and r.json()["error"]["code"] == "rpo_exceeded"
        count = live.ok_sql("west-1", env, "SELECT count(*) FROM t")  # reads still work
        assert count["lsn"] == held["lsn"]
        assert live.checksum("west-1", env) == held  # refused writes changed nothing
    finally:
        live.resume("east-1")

    def accepted():
        r = live.sql("west-1", env, ("INSERT INTO t VALUES (?)", [next(attempts)]))
        assert r.status_code in (200, 503), r.text
        return r.status_code == 200

    poll_until(accepted, 10, what="writes to resume once the secondary caught up")
    live.wait_equal(env)


def test_secondary_killed_during_writes_resumes_without_gap_or_duplicate(
        live: Cluster) -> None:
    env = unique("restart")
    live.pair(env)
    live.ok_sql("west-1", env, "CREATE TABLE events(id INTEGER PRIMARY KEY, note TEXT)")
    writer = IdWriter(NodeSender(live.url("west-1"), live.deployment.secret, timeout=15),
                      env, stamp=False, owns_sender=True).start()
    acks = writer.acks
    try:
        poll_until(lambda: len(acks) >= 100, 15, what="100 acknowledged writes")
        live.kill("east-1")
        mark = len(acks)
        poll_until(lambda: len(acks) >= mark + 100, 15, what="100 writes while east-1 is down")
        live.start("east-1")
        mark = len(acks)
        poll_until(lambda: len(acks) >= mark + 100, 15, what="100 writes after the restart")
    finally:
        writer.stop()
    assert not writer.refusals and not writer.failed, (writer.refusals, writer.errors)
    acked = writer.acked
    final = live.wait_equal(env)
    assert final["lsn"] == live.status("west-1", env)["last_lsn"]
    rows = live.ok_sql("east-1", env, "SELECT id FROM events ORDER BY id")["results"][0]["rows"]
    ids = [r[0] for r in rows]
    assert ids == sorted(acked) == list(range(1, len(acked) + 1))  # no gap, no duplicate
    # Truncation waited for its acknowledgement: it resumed from its own position.
    assert live.status("east-1", env)["last_seed"] is None


def test_journal_is_truncated_only_once_acknowledged(live: Cluster) -> None:
    held, solo, paired = unique("held"), unique("solo"), unique("trunc")
    # A listed secondary that has never pulled holds the journal from lsn 1.
    live.put_replica("west-1", held, "primary", secondaries=("east-1",))
    live.put_replica("west-1", solo, "primary")
    live.pair(paired)
    for env in (held, paired, solo):
        live.ok_sql("west-1", env, "CREATE TABLE t(id INTEGER PRIMARY KEY)")
        for i in range(30):
            live.ok_sql("west-1", env, ("INSERT INTO t VALUES (?)", [i]))
    # One upkeep round visits every replica: once `solo` (no consumers) is truncated, the
    # round has seen the other two as well.
    poll_until(lambda: live.status("west-1", solo)["first_lsn"] > 1, 10, what=f"{solo} truncated")
    assert live.status("west-1", held)["first_lsn"] == 1
    live.wait_equal(paired)

    def truncated_to_ack():
        status = live.status("west-1", paired)
        acked = status["consumers"]["east-1"]["acked_lsn"]
        return status if status["first_lsn"] > 1 and acked == status["last_lsn"] else None

    status = poll_until(truncated_to_ack, 10, what=f"{paired} truncated up to the acknowledgement")
    assert status["first_lsn"] <= status["consumers"]["east-1"]["acked_lsn"]

    # The held journal still starts at lsn 1: its new secondary streams, with no snapshot.
    live.put_replica("east-1", held, "secondary", primary="west-1")
    live.wait_equal(held)
    assert live.status("east-1", held)["last_seed"] is None


def test_new_secondary_seeds_from_a_snapshot(live: Cluster) -> None:
    env = unique("seed")
    live.put_replica("west-1", env, "primary")
    live.ok_sql("west-1", env, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    for i in range(200):
        live.ok_sql("west-1", env, ("INSERT INTO t VALUES (?, ?)", [i, f"row {i}"]))
    for i in range(3):
        r = live.http.put(live.files_url("west-1", env, f"f/{i}.bin"), content=bytes([i]) * 5000)
        assert r.status_code == 200
    # With no consumer registered the primary keeps only its newest entry.
    last = r.json()["lsn"]
    poll_until(lambda: live.status("west-1", env)["first_lsn"] == last, 10,
               what="the journal truncated to its newest entry")
    first = last

    live.put_replica("west-1", env, "primary", secondaries=("east-1",))
    live.put_replica("east-1", env, "secondary", primary="west-1")
    final = live.wait_equal(env)
    seed = live.status("east-1", env)["last_seed"]
    assert seed is not None and seed["lsn"] >= first and seed["bytes"] > 0
    assert live.http.get(live.files_url("east-1", env, "f/2.bin")).content == b"\x02" * 5000

    # After seeding it streams on.
    lsn = live.ok_sql("west-1", env, ("INSERT INTO t VALUES (?, ?)", [999, "after"]))["lsn"]
    assert lsn > final["lsn"]
    after = live.ok_sql("east-1", env, "SELECT v FROM t WHERE id = 999", min_lsn=lsn)
    assert after["results"][0]["rows"] == [["after"]]
    assert live.wait_equal(env)["lsn"] == lsn


def test_primary_killed_and_restarted_resumes_its_replicas(live: Cluster) -> None:
    env = unique("prestart")
    live.pair(env)
    live.ok_sql("west-1", env, "CREATE TABLE t(id INTEGER PRIMARY KEY)")
    for i in range(50):
        live.ok_sql("west-1", env, ("INSERT INTO t VALUES (?)", [i]))
    live.wait_equal(env)
    # Truncation follows the durable acknowledgement, so once the journal was cut, an
    # acknowledgement at least up to the cut is on disk.
    first = poll_until(lambda: max(live.status("west-1", env)["first_lsn"] - 1, 0), 10,
                       what="the journal truncated") + 1
    live.kill("west-1")
    live.start("west-1")
    # The replica and its consumer come back from disk, before any controller answers.
    status = live.status("west-1", env)
    assert status["role"] == "primary" and status["last_lsn"] == 51
    assert status["consumers"]["east-1"]["acked_lsn"] >= first - 1  # entries <= ack were cut
    for i in range(50, 100):
        live.ok_sql("west-1", env, ("INSERT INTO t VALUES (?)", [i]))
    final = live.wait_equal(env)  # the secondary's puller reconnected by itself
    assert final["lsn"] == 101
    assert live.status("east-1", env)["last_seed"] is None
