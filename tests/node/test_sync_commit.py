"""The sync rule between real node processes (docs/ha.md): a primary on west-1, its sync
secondary on west-2 (same region), its geo-secondary on east-1, records PUT by hand.

(a) every acknowledged write is already applied on the sync secondary when its answer
arrives; (b) with the sync secondary paused, writes wait for the controller to record it
unsynced, and are acknowledged only after that, or fail with 503 `sync_unavailable` while
it cannot be reached; (c) the geo rule: the geo-secondary never gets ahead of the sync one;
(d) a secondary that lost sync regains it once caught up, asking the controller first; a
refused request is asked again, and a regaining secondary re-created on another node
(west-3) is dropped for the new one.

No controller runs here: `ControllerStandIn` is a test-only stand-in for the controller's
`POST /internal/v1/environments/{env}/sync` endpoint (contract 3 of issue 11), an endpoint
outside the node, listening on the controller's port. It records each call and answers
200 {"version", "sync": false}; the nodes' heartbeats get a 404 from it, as they get
nothing without it (leases are off in node tests).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tandemdb.testing import poll_until

from .conftest import MAX_BODY, Cluster, unique

NODES = ("west-1", "west-2", "west-3", "east-1")


class ControllerStandIn:
    """Plays the controller's sync endpoint: records (monotonic time, path, body) of each
    call and answers 200 with a new catalog version. Test-only (see the module docstring)."""

    def syncs(self, env: str) -> list[bool]:
        return [body["sync"] for _, _, body in self.of(env)]

    def of(self, env: str) -> list[tuple[float, str, dict]]:
        """The calls about `env` (a primary of an earlier test may still be asking)."""
        return [call for call in self.calls if f"/environments/{env}/" in call[1]]

    def __init__(self, port: int) -> None:
        self.calls: list[tuple[float, str, dict]] = []
        self.refuse_sync = 0  # answer this many `sync: true` requests 409 stale
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if not self.path.endswith("/sync"):
                    self._answer(404, {"error": {"code": "not_found", "message": "stand-in"}})
                    return
                asked = json.loads(body)
                stand_in.calls.append((time.monotonic(), self.path, asked))
                if asked["sync"] and stand_in.refuse_sync > 0:
                    stand_in.refuse_sync -= 1
                    self._answer(409, {"error": {"code": "stale", "message": "stand-in"}})
                    return
                self._answer(200, {"version": len(stand_in.calls), "sync": asked["sync"]})

            def _answer(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster.temporary(tmp_path_factory.mktemp("sync"), start=NODES, nodes_per_region=3,
                           max_body_bytes=MAX_BODY, lease_ttl=0) as running:
        yield running


@pytest.fixture
def nodes(trio: Cluster) -> Cluster:
    for name in NODES:
        trio.resume(name)  # a test may have paused one
    return trio


@pytest.fixture
def stand_in(trio: Cluster) -> Iterator[ControllerStandIn]:
    server = ControllerStandIn(trio.deployment.controller_port)
    try:
        yield server
    finally:
        server.close()


def place(nodes: Cluster, env: str) -> None:
    """west-1 primary, west-2 its sync secondary, east-1 its geo-secondary; one table."""
    nodes.put_replica("west-1", env, "primary", secondaries=("west-2", "east-1"),
                      sync="west-2")
    for secondary in ("west-2", "east-1"):
        nodes.put_replica(secondary, env, "secondary", primary="west-1")
    nodes.ok_sql("west-1", env, "CREATE TABLE t(id INTEGER PRIMARY KEY)")


def lsn(nodes: Cluster, node: str, env: str) -> int:
    return nodes.status(node, env)["last_lsn"]


def insert(client: httpx.Client, nodes: Cluster, env: str, id_: int) -> httpx.Response:
    return client.post(f"{nodes.url('west-1')}/v1/environments/{env}/sql",
                       json={"statements": [{"sql": "INSERT INTO t VALUES (?)",
                                             "params": [id_]}]})


def write_all(nodes: Cluster, env: str, ids: Sequence[int], writers: int,
              after_ack=None) -> list[tuple[int, float, httpx.Response]]:
    """Insert `ids` from `writers` concurrent clients: (id, monotonic answer time, answer).
    `after_ack(id, answer)` runs in the writer's thread right after each 200."""
    secret = {"X-Tandem-Secret": nodes.deployment.secret}

    def run(part: int) -> list[tuple[int, float, httpx.Response]]:
        out = []
        with httpx.Client(headers=secret, timeout=30) as client:
            for id_ in ids[part::writers]:
                answer = insert(client, nodes, env, id_)
                out.append((id_, time.monotonic(), answer))
                if answer.status_code == 200 and after_ack is not None:
                    after_ack(id_, answer.json())
        return out

    with ThreadPoolExecutor(writers) as pool:
        return [a for part in pool.map(run, range(writers)) for a in part]


def test_an_acknowledged_write_is_on_the_sync_secondary(nodes: Cluster) -> None:
    env = unique("sync-ack")
    place(nodes, env)
    behind: list[tuple[int, int, int]] = []

    def on_sync_secondary(id_: int, answer: dict) -> None:
        applied = lsn(nodes, "west-2", env)
        rows = nodes.ok_sql("west-2", env, ("SELECT count(*) FROM t WHERE id = ?", [id_]))
        if applied < answer["lsn"] or rows["results"][0]["rows"] != [[1]]:
            behind.append((id_, answer["lsn"], applied))

    answers = write_all(nodes, env, range(1, 201), writers=8, after_ack=on_sync_secondary)
    assert [a.status_code for _, _, a in answers] == [200] * 200
    assert behind == []  # each ack found its write applied on west-2 already
    assert nodes.status("west-1", env)["record"]["secondaries"][0]["sync"] is True


def test_paused_sync_secondary_is_dropped_only_once_recorded(
        nodes: Cluster, stand_in: ControllerStandIn) -> None:
    env = unique("sync-lost")
    place(nodes, env)
    held = lsn(nodes, "west-2", env)
    nodes.pause("west-2")
    answers = write_all(nodes, env, range(1, 9), writers=4)
    assert [a.status_code for _, _, a in answers] == [200] * 8, [
        a.text for _, _, a in answers if a.status_code != 200]
    assert stand_in.syncs(env)[:1] == [False]
    called_at, path, body = stand_in.of(env)[0]
    assert path == f"/internal/v1/environments/{env}/sync"
    assert body == {"node": "west-2", "sync": False, "epoch": 1, "primary": "west-1"}
    # Every write west-2 lacks was acknowledged after the controller recorded it unsynced.
    assert all(answer.json()["lsn"] > held for _, _, answer in answers)
    assert all(at > called_at for _, at, _ in answers)
    # Sync lost: the geo-secondary is no longer held back by west-2.
    top = lsn(nodes, "west-1", env)
    poll_until(lambda: lsn(nodes, "east-1", env) == top, 20.0, 0.1, "east-1 to catch up")
    nodes.resume("west-2")
    poll_until(lambda: lsn(nodes, "west-2", env) == top, 20.0, 0.1, "west-2 to catch up")


def test_unreachable_controller_fails_writes_and_holds_back_the_geo_secondary(
        nodes: Cluster) -> None:
    env = unique("sync-stuck")
    place(nodes, env)
    nodes.ok_sql("west-1", env, "INSERT INTO t VALUES (0)")
    held = lsn(nodes, "west-2", env)
    nodes.pause("west-2")
    seen: list[int] = []  # east-1's applied lsn, sampled while the writes wait
    with ThreadPoolExecutor(1) as pool:
        # id 0 exists: that transaction fails on its own, in whichever group it is.
        writes = pool.submit(write_all, nodes, env, [1, 2, 0, 3, 4], 5)
        while not writes.done():
            seen.append(lsn(nodes, "east-1", env))
            time.sleep(0.05)
        answers = {id_: answer for id_, _, answer in writes.result()}
    duplicate = answers.pop(0)
    assert duplicate.status_code == 400 and duplicate.json()["error"]["code"] == "sql_error"
    codes = {a.json()["error"]["code"] for a in answers.values() if a.status_code != 200}
    assert [a.status_code for a in answers.values()] == [503] * 4
    assert codes == {"sync_unavailable"}
    assert all("unknown" in a.json()["error"]["message"] for a in answers.values())
    assert len(seen) > 10 and max(seen) == held  # the geo rule held throughout
    assert lsn(nodes, "west-1", env) > held  # committed on the primary, never acknowledged
    nodes.resume("west-2")
    top = lsn(nodes, "west-1", env)
    poll_until(lambda: lsn(nodes, "east-1", env) == top, 20.0, 0.1, "east-1 to catch up")
    # Still sync (nothing was recorded): the next write is acknowledged once west-2 has it.
    with httpx.Client(headers={"X-Tandem-Secret": nodes.deployment.secret}) as client:
        answer = insert(client, nodes, env, 100)
    assert answer.status_code == 200, answer.text
    assert lsn(nodes, "west-2", env) >= answer.json()["lsn"]


def test_a_caught_up_secondary_regains_sync(nodes: Cluster,
                                            stand_in: ControllerStandIn) -> None:
    env = unique("sync-regain")
    place(nodes, env)
    nodes.pause("west-2")
    answers = write_all(nodes, env, range(1, 5), writers=2)
    assert [a.status_code for _, _, a in answers] == [200] * 4
    assert stand_in.syncs(env) == [False]
    nodes.resume("west-2")
    # Caught up, it is waited for again, then the primary asks to record it sync.
    poll_until(lambda: stand_in.syncs(env) == [False, True], 20.0, 0.05,
               "the primary to ask for sync: true")
    assert stand_in.of(env)[1][2] == {"node": "west-2", "sync": True, "epoch": 1,
                                    "primary": "west-1"}
    assert lsn(nodes, "west-2", env) >= max(a.json()["lsn"] for _, _, a in answers)
    # Sync again: a paused west-2 holds writes until it is recorded unsynced once more.
    nodes.pause("west-2")
    again = write_all(nodes, env, range(10, 14), writers=2)
    assert [a.status_code for _, _, a in again] == [200] * 4
    assert stand_in.syncs(env) == [False, True, False]
    assert all(at > stand_in.of(env)[2][0] for _, at, _ in again)


def test_a_refused_regain_is_asked_again_and_follows_a_replaced_replica(
        nodes: Cluster, stand_in: ControllerStandIn) -> None:
    env = unique("sync-replaced")
    stand_in.refuse_sync = 1
    # west-2 is listed without sync: the primary regains it once it has caught up.
    nodes.put_replica("west-1", env, "primary", secondaries=("west-2", "east-1"))
    for secondary in ("west-2", "east-1"):
        nodes.put_replica(secondary, env, "secondary", primary="west-1")
    nodes.ok_sql("west-1", env, "CREATE TABLE t(id INTEGER PRIMARY KEY)")
    poll_until(lambda: stand_in.syncs(env) == [True, True], 20.0, 0.05,
               "a refused sync: true asked again")
    # The stand-in's 200 does not reach the record: west-2 is not sync in it, and is still
    # regaining. Now west-2's replica is re-created on west-3 (a drain, self-healing).
    nodes.put_replica("west-3", env, "secondary", primary="west-1")
    nodes.put_replica("west-1", env, "primary", secondaries=("west-3", "east-1"))
    nodes.ok_sql("west-1", env, "INSERT INTO t VALUES (1)")
    poll_until(lambda: any(body["node"] == "west-3" and body["sync"]
                           for _, _, body in stand_in.of(env)), 20.0, 0.05,
               "the primary to regain sync with west-3")
    answer = nodes.ok_sql("west-1", env, "INSERT INTO t VALUES (2)")
    assert lsn(nodes, "west-3", env) >= answer["lsn"]  # waited for: west-3 is regaining
