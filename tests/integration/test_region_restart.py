"""A controller SIGKILLed during a region failover or failback, and moves that race a
region failover (issue 9 items 7 and 10), with real processes under a unique-id writer.

Item 7: the controller is started with `TANDEM_PAUSE_AT` at a kill point (the first
environment's move parks, the others wait behind `parallelism` 1), SIGKILLed there and
started again at once, without waiting for the nodes' heartbeats: the resumed operation
meets node health it does not know yet. Every environment must move, the operation must
succeed, and every acknowledged write must be there, with equal checksums after catch-up.
The normal suite runs two kill points (one failover, one failback); the soak form runs
every kill point of both, N times over:

    TANDEM_SOAK=N .venv/bin/python -m pytest -m soak tests/integration/test_region_restart.py

Item 10: `region failover east` and `failover ENV` (west to east) sent together; whichever
wins, east never ends failed over while holding a primary. And a region failover that meets
an environment another operation is moving waits for it instead of failing it.
"""

from __future__ import annotations

import itertools
import os
import threading

import pytest

from tandemdb.client import Client, TandemError
from tandemdb.testing import IdWriter, LocalDeployment, caught_up, poll_until

ENVS = ["rk-a", "rk-b", "rk-c", "rk-d"]  # production, home west
WRITTEN = ENVS[:2]  # under a writer each
# (operation, kill point): the first for each direction is the bounded campaign.
BOUNDED = [("failover", "environment.failover/promote:end"),
           ("failback", "region.failback/move-environments:start")]
POINTS = ["environment.failover/fence:start", "environment.failover/catch-up:end",
          "environment.failover/promote:end", "environment.failover/release:end",
          "{kind}/move-environments:start", "{kind}/settle:start"]
# Refusals a write may meet while the controller is down (the call did not run).
BENIGN = ("switching", "no_lease", "unavailable")


def restart(cluster: LocalDeployment, pause_at: str | None) -> None:
    """Start the controller again (after a SIGKILL, or stop it first) without waiting for
    the nodes' heartbeats: operations resume at once."""
    if cluster.processes["controller"].poll() is None:
        cluster.stop("controller")
    cluster.start("controller", env={"TANDEM_PAUSE_AT": pause_at} if pause_at else None)


def parked(cluster: LocalDeployment, point: str, since: int) -> bool:
    text = cluster.log_file("controller").read_text(errors="replace")[since:]
    return f"operation paused at {point}" in text


def region(client: Client, name: str) -> dict:
    return next(r for r in client.regions() if r["name"] == name)


def kill_during(cluster: LocalDeployment, direction: str, point: str) -> dict:
    """Run `region failover|failback west`, SIGKILL the controller at `point`, restart it
    at once; answers the ended operation."""
    client = cluster.client
    kind = f"region.{direction}"
    point = point.format(kind=kind)
    since = cluster.log_file("controller").stat().st_size
    restart(cluster, point)
    poll_until(lambda: all(n["healthy"] for n in region(client, "west")["nodes"]
                           + region(client, "east")["nodes"]), what="nodes heard")
    start = client.region_failover if direction == "failover" else client.region_failback
    op = start("west", parallelism=1)
    poll_until(lambda: parked(cluster, point, since), timeout=30, what=f"a park at {point}")
    cluster.kill("controller")
    restart(cluster, None)
    return client.wait_operation(op["id"], timeout=90)


def check_moved(cluster: LocalDeployment, op: dict, direction: str, point: str) -> None:
    client = cluster.client
    assert op["state"] == "succeeded", (point, op.get("error"), op.get("result"))
    where = "east" if direction == "failover" else "west"
    assert region(client, "west")["state"] == ("failed-over" if direction == "failover"
                                                else "healthy"), point
    views = {e["name"]: e for e in client.environments() if e["name"] in ENVS}
    assert {name: (v["primary_region"], v["state"]) for name, v in views.items()} == \
        {name: (where, "active") for name in ENVS}, point
    children = client.operations(parent=op["id"], limit=100)
    assert sorted(c["target"] for c in children) == sorted(ENVS), point
    assert all(c["state"] == "succeeded" for c in children), point
    log = cluster.log_file("controller").read_text(errors="replace")
    assert "has not heartbeated lately" not in log, point


@pytest.fixture(scope="module")
def fleet(cluster: LocalDeployment):
    client = cluster.client
    for name in ENVS:
        client.create_environment(name, region="west")
    writers = [IdWriter(client, name) for name in WRITTEN]
    for writer in writers:
        writer.create_table(keyed=False)
        writer.start()
    try:
        yield writers
    finally:
        for writer in writers:
            writer.stop()
        if cluster.processes["controller"].poll() is not None:
            restart(cluster, None)


def check_writes(cluster: LocalDeployment, writers: list[IdWriter]) -> None:
    """Every acknowledged id is there once, in both regions; equal checksums."""
    client = cluster.client
    for writer in writers:
        writer.stop()
    for writer in writers:
        assert writer.acked, "the writer never got a write through"
        assert all(any(code in message for code in BENIGN) for _, message in writer.failed), \
            writer.failed[:5]
        assert writer.epochs == sorted(writer.epochs)
        poll_until(lambda w=writer: caught_up(client, w.env), timeout=30, what="caught up")
        writer.check(client)
        primary = client.environment(writer.env)["primary_region"]
        lsn = client.environment(writer.env)["primary_lsn"]
        writer.check(client, region="west" if primary == "east" else "east", min_lsn=lsn)
        assert client.checksum(writer.env, region="west")["total"] == \
            client.checksum(writer.env, region="east")["total"]


def campaign(cluster: LocalDeployment, writers: list[IdWriter],
             points: list[tuple[str, str]]) -> None:
    for direction, point in points:
        op = kill_during(cluster, direction, point)
        check_moved(cluster, op, direction, point)
    check_writes(cluster, writers)


@pytest.mark.soak
def test_a_controller_killed_during_a_region_operation_moves_every_environment(
        cluster: LocalDeployment, fleet: list[IdWriter]):
    rounds = int(os.environ.get("TANDEM_SOAK") or 0)
    points = list(itertools.chain.from_iterable(
        [("failover", p), ("failback", p)] for p in POINTS)) * rounds
    campaign(cluster, fleet, points or BOUNDED)


def test_a_region_failover_and_a_move_into_that_region_exclude_each_other(cluster: LocalDeployment):
    client = cluster.client
    restart(cluster, None)  # (whatever the tests before left running)
    poll_until(lambda: all(n["healthy"] for r in client.regions() for n in r["nodes"]),
               what="nodes heard")
    client.create_environment("rx-home-east", region="east")
    writer = IdWriter(client, "rx-moving")
    client.create_environment(writer.env, region="west")
    writer.create_table(keyed=False)
    writer.start()
    try:
        for _ in range(3):
            answers = race(client, writer.env)
            ops = [client.wait_operation(a["id"], timeout=60) for a in answers.values()
                   if "id" in a]
            assert ops, answers
            east = region(client, "east")["state"]
            in_east = [e["name"] for e in client.environments()
                       if e["primary_region"] == "east" and e["type"] == "production"]
            assert east in ("healthy", "failed-over"), east
            assert east == "healthy" or not in_east, (answers, ops, in_east)
            refused = [a["error"]["code"] for a in answers.values() if "id" not in a]
            assert set(refused) <= {"busy", "region_evacuated"}, answers  # it says why
            if east == "failed-over":
                back = client.wait_operation(client.region_failback("east")["id"], timeout=60)
                assert back["state"] == "succeeded", back
            if client.environment(writer.env)["primary_region"] == "east":
                home = client.wait_operation(client.failover(writer.env)["id"], timeout=60)
                assert home["state"] == "succeeded", home

        # A failed-over region takes back its own environments, and nothing else.
        over = client.wait_operation(client.region_failover("west")["id"], timeout=90)
        assert over["state"] == "succeeded", over
        with pytest.raises(TandemError) as refused:
            client.failover("rx-home-east")
        assert (refused.value.status, refused.value.code) == (409, "region_evacuated")
        home = client.wait_operation(client.failover(writer.env)["id"], timeout=60)
        assert home["state"] == "succeeded" and region(client, "west")["state"] == \
            "failed-over"
        back = client.wait_operation(client.region_failback("west")["id"], timeout=90)
        assert back["state"] == "succeeded" and region(client, "west")["state"] == "healthy"
    finally:
        writer.stop()
    check_writes(cluster, [writer])


def race(client: Client, env: str) -> dict[str, dict]:
    """`region failover east` and `failover env` sent at the same moment: their answers
    (the operation, or `{"error": {...}}`)."""
    answers: dict[str, dict] = {}
    barrier = threading.Barrier(2)

    def send(name: str, call) -> None:
        barrier.wait()
        try:
            answers[name] = call()
        except TandemError as exc:
            answers[name] = {"error": {"code": exc.code, "message": exc.message}}

    threads = [threading.Thread(target=send, args=("region", lambda: client.region_failover(
                   "east"))),
               threading.Thread(target=send, args=("environment", lambda: client.failover(
                   env)))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return answers


def test_a_region_failover_waits_for_a_move_out_of_it_that_runs(cluster: LocalDeployment):
    """An environment another operation holds is waited for, not failed: here its own
    failover to east, started just before `region failover west`."""
    client = cluster.client
    name = "rw-held"
    client.create_environment(name, region="west")
    client.sql(name, "CREATE TABLE events(id INTEGER, at REAL)")
    single = client.failover(name)
    over = client.wait_operation(client.region_failover("west")["id"], timeout=90)
    assert client.wait_operation(single["id"], timeout=60)["state"] == "succeeded"
    assert over["state"] == "succeeded", (over.get("error"), over.get("result"))
    # (Its line says "moved by operation …" when the region's move found it held; had the
    # single failover ended first, the region would not have had to move it at all.)
    lines = [e for e in over["result"]["environments"] if e["environment"] == name]
    assert all(line["state"] == "succeeded" for line in lines), lines
    assert client.environment(name)["primary_region"] == "east"
    back = client.wait_operation(client.region_failback("west")["id"], timeout=90)
    assert back["state"] == "succeeded", back.get("error")
