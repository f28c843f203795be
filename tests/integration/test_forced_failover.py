"""Forced failover: the primary's node is SIGKILLed under load and the secondary takes over.

What is checked (the invariants of docs/design.md): the old primary's lease has run out
before the promotion (2);
every write acknowledged at or below the fork point survives, and no more acknowledged
writes are missing than the loss the controller reported (4, 5); nothing is present twice;
the old primary comes back fenced, keeps its lost writes (listed by `GET …/lost`), rewinds
to the fork point, streams again, and the environment fails back home without loss.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import httpx
import pytest

from tandemdb.client import TandemError
from tandemdb.testing import IdWriter, LocalDeployment, caught_up, poll_until

LEASE_TTL = 2.0


@pytest.fixture(scope="module")
def lossy(start_deployment: Callable[..., LocalDeployment]) -> LocalDeployment:
    return start_deployment("forced", lease_ttl=LEASE_TTL)


def test_forced_failover_after_the_primary_is_killed(lossy: LocalDeployment):
    client, env = lossy.client, "forced-one"
    client.create_environment(env, region="west")
    writer = IdWriter(client, env)
    writer.create_table(keyed=False)
    client.sql(env, ["CREATE TABLE kv(k TEXT PRIMARY KEY, v INTEGER)",
                     "INSERT INTO kv VALUES ('a', 0), ('c', 0)"])
    writer.start()
    west = lossy.node_of("west")
    try:
        # The controller knows the primary's lsn from its heartbeats (every 0.5 s).
        poll_until(lambda: (client.environment(env)["primary_lsn"] or 0) > 30,
                   what="writes before the outage, reported to the controller")
        # The secondary falls behind (frozen), the primary acknowledges more, then dies:
        # those writes are certainly lost from the new history.
        east = lossy.node_of("east")
        lossy.signal(east, signal.SIGSTOP)
        try:
            ahead = len(writer.acked)
            poll_until(lambda: len(writer.acked) > ahead + 20, what="writes east never saw")
            # Two more writes only west acknowledges: one will conflict, one will not.
            client.sql(env, "UPDATE kv SET v = 1 WHERE k = 'a'")
            client.sql(env, "INSERT INTO kv VALUES ('b', 1)")
            client.sql(env, "UPDATE kv SET v = 1 WHERE k = 'c'")  # east will hold bad text
            lossy.kill(west)
        finally:
            lossy.signal(east, signal.SIGCONT)
        killed_at = time.time()
        op = client.failover(env, mode="forced")
        assert [s["name"] for s in op["steps"]] == ["hold", "expire-lease", "promote",
                                                    "switch-routing", "release"]
        done = client.wait_operation(op["id"], timeout=60)
        assert done["state"] == "succeeded", done
        line = done["result"]["environments"][0]
        assert (line["mode"], line["to_region"], line["epoch"]) == ("forced", "east", 2)
        promoted = next(s for s in done["steps"] if s["name"] == "promote")
        # The promotion waited for the old primary's lease to run out.
        assert time.time() - killed_at >= LEASE_TTL
        assert "fork point" in promoted["detail"]
        acked = len(writer.acked)
        poll_until(lambda: len(writer.acked) > acked + 10, what="writes in east")
        client.sql(env, "UPDATE kv SET v = 2 WHERE k = 'a'")  # written since the fork
        # Text that is not UTF-8 in the row a lost write changed: it cannot be compared.
        client.sql(env, "UPDATE kv SET v = CAST(x'fffe41' AS TEXT) WHERE k = 'c'")
    finally:
        writer.stop()

    fork, reported = line["fork_lsn"], line["data_loss"]
    rows = client.sql(env, "SELECT id FROM events")["results"][0]["rows"]
    ids = [r[0] for r in rows]
    assert len(ids) == len(set(ids)), "an id is present twice"
    acked = list(zip(writer.acked, writer.lsns, writer.epochs, strict=True))
    missing = [(i, lsn) for i, lsn, epoch in acked if i not in set(ids)]
    # Lost: only epoch-1 writes past the fork point. What the controller reports is what
    # it knew at promotion (the old primary's last heartbeat), so it can be fewer.
    assert all(lsn > fork for _, lsn in missing), missing[:5]
    assert len(missing) >= 20, "the writes the frozen secondary never saw must be lost"
    assert isinstance(reported, int) and reported >= 0
    assert all(i in set(ids) for i, _, epoch in acked if epoch == 2)
    kinds = [e["type"] for e in client.events(after=0)["events"] if e["environment"] == env]
    assert kinds[-3:] == ["failover.started", "failover.completed", "failover.data_loss"]
    loss = next(e for e in client.events(after=0)["events"] if e["type"] == "failover.data_loss"
                and e["environment"] == env)["data"]
    assert (loss["fork_lsn"], loss["lost_entries_known"]) == (fork, reported)

    # The old primary comes back fenced (never a write at its old epoch), keeps its lost
    # writes in the controller's keeping, rewinds to the fork point and streams again.
    lossy.start(west)
    rejoin = None

    def rejoined() -> bool:
        nonlocal rejoin
        rejoin = next((o for o in client.operations(limit=50)
                       if o["kind"] == "environment.rejoin" and o["target"] == env), None)
        return rejoin is not None and rejoin["state"] in ("succeeded", "failed")

    poll_until(rejoined, timeout=30, what="the old primary's rejoin")
    assert rejoin["state"] == "succeeded", rejoin
    bundles = client.lost(env)["bundles"]
    assert len(bundles) == 1 and bundles[0]["fork_lsn"] == fork and bundles[0]["rewound"]
    lost_rows = {c["after"]["id"] for e in bundles[0]["entries"] for c in e["changes"]
                 if c["table"] == "events" and c["op"] == "insert"}
    # Every acknowledged write missing in the new history is listed, with its values.
    assert {i for i, _ in missing} <= lost_rows
    assert all(e["lsn"] > fork for e in bundles[0]["entries"])
    kinds = [e["type"] for e in client.events(after=0)["events"] if e["environment"] == env]
    assert kinds[-1] == "replica.rejoined"

    def equal() -> bool:
        view = client.environment(env)
        west_lsn = next(r["applied_lsn"] for r in view["replicas"] if r["region"] == "west")
        return west_lsn == view["primary_lsn"] and west_lsn is not None

    poll_until(equal, timeout=30, what="the rejoined replica to catch up")
    # Equal checksums; west may be re-seeded meanwhile (east's journal may have been
    # truncated past the fork point while west was away), answering 503 until it is done.
    poll_until(lambda: client.checksum(env, region="west")["total"]
               == client.checksum(env, region="east")["total"], timeout=30,
               what="equal checksums in west and east", ignore=(TandemError,))
    # Replay: what conflicts with nothing since the fork is applied, the rest is listed;
    # a second replay applies nothing twice.
    replay = client.replay_lost(env)
    conflicting = {c["key"]["k"]: c for c in replay["conflicts"] if c["table"] == "kv"}
    assert set(conflicting) == {"a", "c"}, replay["conflicts"]
    assert "changed since the fork" in conflicting["a"]["reason"]
    assert "not UTF-8" in conflicting["c"]["reason"]  # a conflict, not a 5xx
    kv = dict(client.sql(env, "SELECT k, v FROM kv WHERE k IN ('a', 'b')")["results"][0]["rows"])
    assert kv == {"a": 2, "b": 1}  # east's own 'a' kept, the lost 'b' replayed
    again = client.replay_lost(env)
    assert again["applied"] == [] and set(replay["applied"]) <= set(again["already"])
    replayed = {r[0] for r in client.sql(env, "SELECT id FROM events")["results"][0]["rows"]}
    assert set(ids) <= replayed and replayed - set(ids) <= lost_rows
    counts = client.sql(env, "SELECT id, count(*) FROM events GROUP BY id HAVING count(*) > 1")
    assert counts["results"][0]["rows"] == [], "a lost write replayed twice"

    # Home again with the zero-loss protocol.
    back = client.wait_operation(client.failover(env)["id"], timeout=60)
    assert back["state"] == "succeeded", back
    after = {r[0] for r in client.sql(env, "SELECT id FROM events")["results"][0]["rows"]}
    assert after == replayed


def test_controller_killed_during_a_forced_failover(lossy: LocalDeployment):
    """Invariant 7 for the forced path: the controller dies after the promotion, before it
    is recorded; restarted, it finishes, with exactly one writable primary."""
    client, env = lossy.client, "forced-crash"
    client.create_environment(env, region="west")
    client.sql(env, "CREATE TABLE events(id INTEGER, at REAL)")
    client.sql(env, "INSERT INTO events(id) VALUES (1)")
    west = lossy.node_of("west")
    # East must have applied row 1 before west dies: the forced failover may lose what it
    # has not (the primary's reported lsn alone does not say east has it).
    poll_until(lambda: (client.environment(env)["primary_lsn"] or 0) >= 2
               and caught_up(client, env), what="row 1 applied in east")
    lossy.kill(west)
    point = "environment.failover/promote:end"
    log = lossy.log_file("controller")
    size = log.stat().st_size
    lossy.stop("controller")
    lossy.start("controller", env={"TANDEM_PAUSE_AT": point})
    poll_until(lambda: any(n["healthy"] for r in client.regions() if r["name"] == "east"
                           for n in r["nodes"]), what="east heard by the new controller")
    op = client.failover(env, mode="forced")
    poll_until(lambda: f"operation paused at {point}" in
               log.read_text(errors="replace")[size:], timeout=30, what="the pause")
    lossy.kill("controller")
    lossy.start("controller")
    done = client.wait_operation(op["id"], timeout=60)
    assert done["state"] == "succeeded", done
    assert [s["attempts"] for s in done["steps"] if s["name"] == "promote"] == [2]
    view = client.environment(env)
    assert (view["primary_region"], view["epoch"]) == ("east", 2)
    secret = {"X-Tandem-Secret": lossy.deployment.secret}
    write = {"statements": [{"sql": "DELETE FROM events WHERE id = -1"}]}
    east_url = lossy.deployment.node_url(lossy.node_of("east"))

    def east_writes() -> bool:
        """The new primary takes a write once the restarted controller has answered its
        heartbeat with a lease; until then it refuses (503 no_lease) and writes nothing."""
        answer = httpx.post(f"{east_url}/v1/environments/{env}/sql", headers=secret,
                            json=write)
        if answer.status_code == 200:
            return True
        assert (answer.status_code, answer.json()["error"]["code"]) == (503, "no_lease"), \
            answer.text
        return False

    poll_until(east_writes, timeout=15, what="east's write under its lease")
    lossy.start(west)  # back: it rejoins as a secondary and never writes
    poll_until(lambda: not any(r.get("behind") for r in client.environment(env)["replicas"]),
               timeout=30, what="the rejoin")
    west_url = lossy.deployment.node_url(west)
    refused = httpx.post(f"{west_url}/v1/environments/{env}/sql", headers=secret, json=write)
    assert refused.status_code == 409, refused.text
    assert [r[0] for r in client.sql(env, "SELECT id FROM events")["results"][0]["rows"]] == [1]
