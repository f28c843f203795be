"""The heartbeat in its own thread (issue 9, items 3 and 6), on a real node in-process.

The controller's side is played by a small HTTP server on the controller's port that
answers every heartbeat with the JSON text the test sets (as tests/controller/beats.py
plays the nodes for the controller). The node is the real one: `Node.start()` runs its
heartbeat, upkeep and puller as the node process does.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tandemdb.common.deployment import Deployment
from tandemdb.node.app import Node
from tandemdb.node.heartbeat import parse_answer
from tandemdb.testing import plan, poll_until

TTL = 2.0
DEADLINE = 10.0  # for anything the heartbeat should do within a few beats


class PlayedController:
    """Answers POST /internal/v1/heartbeat with `self.answer` (JSON text), counting beats."""

    def __init__(self, dep: Deployment) -> None:
        self.answer = json.dumps({"replicas": [], "lease": {"ttl": TTL}})
        self.beats = 0
        played = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # the stdlib's name
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                body = played.answer.encode()
                played.beats += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", dep.controller_port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def deployment(tmp_path: Path) -> Deployment:
    dep = plan(tmp_path, lease_ttl=TTL, heartbeat_interval=0.1)
    return dep


def record(dep: Deployment, env: str, role: str = "primary", **fields) -> dict:
    east = {"node": "east-1", "region": "east", "url": dep.node_url("east-1")}
    return {"env": env, "role": role, "epoch": 1, "type": "production",
            "rpo_limit_seconds": 900, "primary": None,
            "secondaries": [east] if role == "primary" else [], "version": 1, **fields}


def answer(*records: dict, raw: str = "") -> str:
    """A heartbeat answer; `raw` is spliced in as more records, as JSON text (a 400-digit
    number or 1e400 cannot be written with json.dumps as a controller's bug would)."""
    listed = ", ".join([json.dumps(r) for r in records] + ([raw] if raw else []))
    return f'{{"replicas": [{listed}], "lease": {{"ttl": {TTL}}}, "revision": 1}}'


async def until(check: Callable[[], object], what: str, within: float = DEADLINE) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.02)


def blocking_until(check: Callable[[], object], what: str) -> None:
    """As `until`, but sleeping in place: the caller's event loop is blocked meanwhile."""
    poll_until(check, DEADLINE, 0.02, what)


def run_node(dep: Deployment, scenario: Callable[[Node], object]) -> None:
    async def main() -> None:
        node = Node(dep, "west-1")
        await node.start()
        try:
            await scenario(node)
        finally:
            await node.stop()

    asyncio.run(main())


@pytest.fixture
def setup(tmp_path: Path):
    dep = deployment(tmp_path)
    controller = PlayedController(dep)
    try:
        yield dep, controller
    finally:
        controller.close()


BAD_RECORDS = ", ".join([
    json.dumps(record_stub := {"role": "primary", "epoch": 1, "secondaries": []})
    .replace("{", '{"env": "huge", "rpo_limit_seconds": 1' + "0" * 400 + ", ", 1),
    json.dumps(record_stub).replace("{", '{"env": "inf", "rpo_limit_seconds": 1e400, ', 1),
    json.dumps(record_stub).replace("{", '{"env": "nan", "rpo_limit_seconds": NaN, ', 1),
    '{"env": "epoch", "role": "primary", "epoch": 1' + "0" * 5000 + "}",
    '{"env": "version", "role": "primary", "epoch": 1, "version": 1' + "0" * 30 + "}",
    '{"env": "peer", "role": "secondary", "epoch": 1, "primary": {"node": "w", '
    '"region": "west", "url": "ftp://x"}}',
])


def test_the_answer_parser_reads_any_integer() -> None:
    parsed = parse_answer(answer(raw=BAD_RECORDS).encode())
    assert [r["env"] for r in parsed["replicas"]] == ["huge", "inf", "nan", "epoch", "version",
                                                      "peer"]
    assert parsed["replicas"][3]["epoch"] == float("inf")  # 5,001 digits: no ValueError


def test_a_bad_record_is_refused_alone_and_the_lease_is_renewed(setup, caplog) -> None:
    """Item 3: one environment's unusable value refuses that replica, and only it."""
    dep, controller = setup
    controller.answer = answer(record(dep, "alpha"), raw=BAD_RECORDS)

    async def scenario(node: Node) -> None:
        await until(lambda: node.lease.valid() and node.replicas.find("alpha"),
                    "the lease and alpha")
        renewed = node.lease.granted_at
        await until(lambda: node.lease.granted_at > renewed, "the next renewal")
        assert [r.name for r in node.replicas] == ["alpha"]
        node.gate.check(node.replicas.get("alpha"))  # writes are taken

    run_node(dep, scenario)
    refusals = [r.getMessage() for r in caplog.records if "is refused" in r.getMessage()]
    for env in ("huge", "inf", "nan", "epoch", "version", "peer"):
        said = [m for m in refusals if f"record of {env} is refused" in m]
        assert len(said) == 1, (env, refusals)  # once, not at every beat
    assert all(len(m) < 400 for m in refusals)


def test_the_lease_is_renewed_while_a_replica_holds_its_engine_lock(setup) -> None:
    """Item 6: a primary's long commit (its engine's lock held) used to hold up the
    heartbeat's report (a lag look-up), so the node's lease ran out for every tenant."""
    dep, controller = setup
    controller.answer = answer(record(dep, "noisy"), record(dep, "victim"))

    async def scenario(node: Node) -> None:
        await until(lambda: node.lease.valid() and len(node.replicas) == 2, "the lease")
        noisy = node.replicas.get("noisy")
        await asyncio.to_thread(noisy.env.execute, ["CREATE TABLE t(x)"])  # east lags: 1

        def commit_for_long() -> None:
            with noisy.env.exclusive():  # as a long commit holds it
                held_at = node.lease.clock()
                blocking_until(lambda: node.lease.granted_at > held_at + TTL,
                               "renewals while the engine's lock is held")
                node.gate.check(node.replicas.get("victim"))

        await asyncio.to_thread(commit_for_long)

    run_node(dep, scenario)


def test_the_lease_is_renewed_while_the_nodes_loop_is_blocked(setup) -> None:
    """Item 6: an event loop held up (a large answer being encoded) holds up no renewal
    of an answer that changes nothing."""
    dep, controller = setup
    controller.answer = answer(record(dep, "alpha"))

    async def scenario(node: Node) -> None:
        await until(lambda: node.lease.valid() and node.replicas.find("alpha"), "the lease")
        blocked_at = node.lease.clock()
        blocking_until(lambda: node.lease.granted_at > blocked_at + TTL,  # the loop waits
                       "renewals while the node's loop is blocked")

    run_node(dep, scenario)


def test_roles_first_a_changed_record_renews_only_once_adopted(setup) -> None:
    """docs/leases.md: an answer that changes a record renews the lease only after the
    node's loop adopted it, however long that loop is busy."""
    dep, controller = setup
    controller.answer = answer(record(dep, "alpha"))

    async def scenario(node: Node) -> None:
        await until(lambda: node.lease.valid() and node.replicas.find("alpha"), "the lease")
        alpha = node.replicas.get("alpha")
        beats = controller.beats
        changed_at = node.lease.clock()
        controller.answer = answer(record(dep, "alpha", role="fenced", version=2))
        # The loop is blocked while several answers with the fenced record come back.
        blocking_until(lambda: controller.beats >= beats + 5, "more heartbeats")
        assert alpha.role == "primary"  # the loop could not adopt it yet …
        assert node.lease.granted_at < changed_at  # … so none of them renewed the lease

        def check() -> bool:
            renewed = node.lease.granted_at > changed_at
            assert not renewed or alpha.role == "fenced", "renewed before it was adopted"
            return renewed

        await until(check, "the renewal after the adoption")

    run_node(dep, scenario)


def test_a_loop_stuck_for_long_stops_the_beats(setup) -> None:
    """A loop that has not run for long (a bug) serves nobody: the node stops beating, as
    when the beats ran on it, so the controller sees it as unhealthy."""
    dep, controller = setup
    controller.answer = answer(record(dep, "alpha"))

    async def scenario(node: Node) -> None:
        await until(lambda: node.lease.valid() and node.replicas.find("alpha"), "the lease")
        node.heartbeat._loop_stuck = 0.5  # instead of max(5 s, 2 ttl): a quicker test
        time.sleep(1.0)  # noqa: ASYNC251 - the loop is stuck (on purpose): past the bound
        beats = controller.beats
        time.sleep(0.5)  # noqa: ASYNC251 - still stuck: five intervals more
        assert controller.beats == beats
        await until(lambda: controller.beats > beats, "the beats once the loop runs again")

    run_node(dep, scenario)
