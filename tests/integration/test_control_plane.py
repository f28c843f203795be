"""The control plane on etcd (issue 12): three controllers, one per site, elect a leader
through an etcd lease; it outlives its leader and one etcd member, and stops deciding
without a quorum.

One deployment (`tandem up --store etcd`'s shape: 3 etcd members, 3 controllers, one node
and one gateway per region), used in order by:
1. SIGKILL of the leader in the middle of a planned region failover of 20 environments: a
   new leader finishes it; one primary per environment, epoch 2 (no promotion twice), no
   acknowledged write lost, and every child operation recorded once and succeeded.
2. SIGSTOP of the leader in the middle of the failback; SIGCONT after a new leader has
   finished it: the old leader changes no key of the store (its writes are fenced), and it
   restarts itself as a follower.
2b. The leader key taken behind the leader's back: etcd's history holds no write between
   that and the next leader's key, and what the leader acknowledged exists.
3. etcd members: one lost changes nothing; two lost stop every decision (503 `no_leader`,
   the control plane says why) while writes go on (the failsafe of docs/leases.md); back,
   everything resumes.
The writer knows both gateways, as a client of a multi-gateway deployment would.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tandemdb.client import Client, TandemError
from tandemdb.common.http import SECRET_HEADER
from tandemdb.common.layout import Shape
from tandemdb.controller.leader import LEADER_KEY
from tandemdb.controller.store import Change, open_store
from tandemdb.controller.store.etcd import EtcdStore
from tandemdb.controller.store.etcdclient import delete_op
from tandemdb.testing import IdWriter, LocalDeployment, poll_until, wait_replicated

ENVS = [f"cp-{i:02d}" for i in range(20)]
WRITTEN = ENVS[:3]
PARALLELISM = 2  # slow enough to be caught in the middle


@pytest.fixture(scope="module")
def etcd() -> Iterator[LocalDeployment]:
    with LocalDeployment.temporary(shape=Shape.parse("etcd"), prefix="tandem-cp-") as cluster:
        try:
            yield cluster
        except BaseException:
            print(cluster.logs_tail())
            raise


def children(client: Client, op_id: str) -> list[dict]:
    return client.operations(limit=100, parent=op_id)


def in_the_middle(client: Client, op_id: str) -> bool:
    """Some children of the operation have ended and some have not."""
    states = [c["state"] for c in children(client, op_id)]
    ended = sum(s in ("succeeded", "failed") for s in states)
    return 0 < ended < len(ENVS)


def store_keys(cluster: LocalDeployment) -> dict[str, tuple]:
    d = cluster.deployment
    store = open_store(Path(d.data) / "controller", {**d.store, "endpoints": d.store_endpoints()})
    try:
        return {key: (item.version, json.dumps(item.value, sort_keys=True))
                for key, item in store.list("").items()}
    finally:
        store.close()


def check_one_primary(client: Client, region: str, epoch: int) -> None:
    for env in ENVS:
        view = client.environment(env)
        primaries = [r for r in view["replicas"] if r["role"] == "primary"]
        assert len(primaries) == 1, (env, view["replicas"])
        assert (view["primary_region"], view["epoch"]) == (region, epoch), (env, view)


def test_1_a_new_leader_finishes_a_region_failover_whose_leader_was_killed(etcd):
    client = etcd.client
    assert len(client.urls) == 2, "the writer knows both gateways"
    for env in ENVS:
        client.create_environment(env, region="west")
    writer = IdWriter(client, WRITTEN)
    writer.create_table()
    writer.start()
    try:
        poll_until(lambda: len(writer.acked) > 30, what="writes before the failover")
        writer.pause()  # so that the secondaries can be seen caught up
        wait_replicated(client, ENVS, timeout=60)
        writer.resume()
        first = etcd.leader()
        assert first is not None
        op = client.region_failover("west", parallelism=PARALLELISM)
        poll_until(lambda: in_the_middle(client, op["id"]), timeout=60, interval=0.01,
                   what="the failover half done")
        etcd.kill(first)
        killed = time.monotonic()
        second = poll_until(lambda: etcd.leader(besides=first), timeout=15, interval=0.05,
                            what="a new leader")
        print(f"new leader {second} {time.monotonic() - killed:.2f} s after the kill")
        final = client.wait_operation(op["id"], timeout=120)
        acked = len(writer.acked)
        poll_until(lambda: len(writer.acked) > acked + 10, what="writes after the failover")
    finally:
        writer.stop()
    assert (final["state"], final["result"]["succeeded"]) == ("succeeded", len(ENVS)), final
    assert re.search(rf"operation {op['id']} \(.*\): resumed", etcd.log(second)), \
        "the new leader resumed the operation"
    kids = children(client, op["id"])
    assert sorted(k["params"]["environment"] for k in kids) == ENVS, "one child per env"
    assert all(k["state"] == "succeeded" for k in kids), kids
    check_one_primary(client, "east", 2)
    for env in WRITTEN:
        writer.check(client, env)  # a planned failover loses nothing acknowledged
    etcd.start(first)  # back, as a follower
    assert not etcd.healthz(first).get("leading")


def test_2_a_paused_old_leader_cannot_write_a_single_key(etcd):
    client = etcd.client
    first = etcd.leader()
    assert first is not None
    answers: list = []
    op = client.region_failback("west", parallelism=PARALLELISM)
    poll_until(lambda: in_the_middle(client, op["id"]), timeout=60, interval=0.01,
               what="the failback half done")
    etcd.pause(first)
    try:
        second = poll_until(lambda: etcd.leader(besides=first), timeout=15, interval=0.05,
                            what="a new leader while the old one is paused")
        time.sleep(1.0)  # gateways follow an election within a probe (common/leader_watch.py)
        final = client.wait_operation(op["id"], timeout=120)
        assert final["state"] == "succeeded", [(k["params"]["environment"], k["state"],
                                                k.get("error")) for k in
                                               children(client, op["id"])][:5]
        time.sleep(1.0)  # the new leader at rest
        before = store_keys(etcd)
        # A call that reached the old leader while it was paused runs when it wakes up,
        # before it learns it was deposed: its write must be refused by the fence.
        stale = threading.Thread(target=stale_create, args=(etcd, first, answers))
        stale.start()
        time.sleep(0.5)
    finally:
        etcd.resume(first)
    stale.join(30)
    print(f"the create sent to the paused {first}: {answers}")
    assert answers and not (isinstance(answers[0], int) and answers[0] < 300), answers
    # Its in-flight steps wake up and try to write; every write is fenced, then it restarts.
    poll_until(lambda: "steps down" in etcd.log(first), timeout=15,
               what="the old leader to step down")
    poll_until(lambda: etcd.healthz(first).get("leader") == second, timeout=15,
               what="the old leader back as a follower of the new one")
    time.sleep(1.0)
    after = store_keys(etcd)
    fenced = etcd.log(first).count("no longer holds the leader key")
    print(f"{first} resumed: {fenced} write(s) refused by the fence")
    changed = {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)
               and not key.startswith("control/")}
    assert not changed, f"keys changed after the old leader resumed: {sorted(changed)[:10]}"
    assert etcd.leader() == second
    check_one_primary(client, "west", 3)
    assert "cp-stale" not in {e["name"] for e in client.environments()}


SENDERS = 4  # creates in flight together, so that some may meet the fence first


def take_the_key(cluster: LocalDeployment, first: str) -> tuple[dict, dict, list[Change]]:
    """Delete the leader key behind `first`'s back while creates stream to it. Answers the
    HTTP status of each create (0: no answer, the process restarted under it), the error
    code of each refused one, and every write to the store between the deletion and the
    next leader's key (there must be none: the deposed leader's are fenced)."""
    d = cluster.deployment
    answers: dict[str, int] = {}
    codes: dict[str, str] = {}
    stop = threading.Event()

    def create_all_along(sender: int) -> None:
        with httpx.Client(timeout=5.0, headers={SECRET_HEADER: d.secret}) as http:
            for i in range(10_000):
                if stop.is_set():
                    return
                name = f"cp-fence-{sender}-{i}"
                try:
                    answer = http.post(cluster.url(first) + "/v1/environments",
                                       json={"name": name, "region": "west"})
                    answers[name] = answer.status_code
                    if answer.status_code != 201:
                        codes[name] = answer.json()["error"]["code"]
                except httpx.HTTPError:
                    answers[name] = 0  # the process restarted under it: unknown
                time.sleep(0.02)

    senders = [threading.Thread(target=create_all_along, args=(n,)) for n in range(SENDERS)]
    store = open_store(Path(d.data) / "controller", {**d.store, "endpoints": d.store_endpoints()})
    assert isinstance(store, EtcdStore)
    try:
        for sender in senders:
            sender.start()
        poll_until(lambda: sum(code == 201 for code in answers.values()) >= 2,
                   what=f"creates acknowledged by the leader (so far {codes})")
        taken = store.client.txn([], [delete_op((store.prefix + LEADER_KEY).encode())])
        assert int(taken.responses[0]["response_delete_range"].get("deleted", 0)) == 1, taken
        poll_until(lambda: "steps down" in cluster.log(first), timeout=15,
                   what="the leader to notice and step down")
        poll_until(cluster.leader, timeout=15, what="a leader again")
        return answers, codes, writes_before_the_next_term(store, taken.revision)
    finally:
        stop.set()
        for sender in senders:
            sender.join(30)
        store.close()


def writes_before_the_next_term(store: EtcdStore, after: int) -> list[Change]:
    """Every write to the store after revision `after`, up to the next leader key: etcd's
    history, so a write later overwritten is seen too."""
    writes: list[Change] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for change in store.watch("", after, timeout=2.0):
            if change.key == LEADER_KEY and change.value is not None:
                return writes
            writes.append(change)
            after = change.revision
    raise AssertionError(f"no new leader key in etcd's history after revision {after}")


def active(client: Client) -> set[str]:
    return {e["name"] for e in client.environments() if e["state"] == "active"}


def test_2b_a_leader_whose_key_is_taken_writes_nothing_more(etcd):
    """The leader key deleted behind the leader's back (its lease still alive): from then on
    the store takes no write from it (its transactions compare the key), until it notices,
    at its next keepalive (every ttl/8), and steps down; etcd's history between the
    deletion and the next leader's key holds no write at all. What it acknowledged exists;
    what it refused (503 `not_leader`, when a write met the fence before the step-down)
    does not. A write in flight at the step-down has no answer (unknown to the caller).
    The fence itself, write by write, is tested in tests/controller/test_store_etcd.py."""
    client = etcd.client
    first = etcd.leader()
    assert first is not None
    answers, codes, writes = take_the_key(etcd, first)
    assert writes == [], f"written after the key was taken: {writes}"
    refused = {n for n, code in codes.items() if code == "not_leader"}
    created = {n for n, code in answers.items() if code == 201}
    print(f"{first}: {len(created)} created, {len(refused)} refused by the fence")
    # `interrupted`: the create's operation was recorded before the key went and its next
    # step was fenced; the new leader resumes it (invariant 7).
    assert set(codes.values()) <= {"not_leader", "no_leader", "interrupted"}, codes
    interrupted = {n for n, code in codes.items() if code == "interrupted"}
    time.sleep(1.0)  # gateways follow the election
    poll_until(lambda: interrupted <= active(client), timeout=30,
               what=f"the new leader to finish the creates of {interrupted}",
               ignore=(TandemError,))
    names = {e["name"] for e in client.environments()}
    assert created <= names, created - names
    assert not refused & names, refused & names


def stale_create(cluster: LocalDeployment, name: str, answers: list) -> None:
    """POST a create straight to controller `name`; keep its status or the failure."""
    try:
        answer = httpx.post(cluster.url(name) + "/v1/environments", timeout=20.0,
                            json={"name": "cp-stale", "region": "west"},
                            headers={SECRET_HEADER: cluster.deployment.secret})
        answers.append(answer.status_code)
        answers.append(answer.text[:300])
    except httpx.HTTPError as exc:
        answers.append(repr(exc))


def test_3_one_etcd_member_lost_changes_nothing_two_stop_decisions_not_writes(etcd):
    client = etcd.client
    env = ENVS[0]
    writer = IdWriter(client, env, table="quorum")
    writer.create_table()
    writer.start()
    try:
        etcd.kill("etcd-east")
        client.create_environment("cp-one-lost", region="west")  # a decision: made
        op = client.failover("cp-one-lost", mode="planned")
        assert client.wait_operation(op["id"], timeout=60)["state"] == "succeeded"

        etcd.kill("etcd-witness")  # two of three: no quorum
        lost = time.monotonic()
        poll_until(lambda: client.control_plane()["leader"] is None, timeout=15,
                   ignore=(TandemError,), what="the leader to step down without quorum")
        view = client.control_plane()
        assert view["problem"] and view["store"]["quorum"] is False, view
        with pytest.raises(TandemError) as refused:
            client.create_environment("cp-no-quorum", region="west")
        assert (refused.value.status, refused.value.code) == (503, "no_leader")
        acked = len(writer.acked)
        time.sleep(max(0.0, 2 * etcd.deployment.lease_ttl - (time.monotonic() - lost)))
        assert len(writer.acked) > acked + 20, "writes go on past the lease (failsafe)"
    finally:
        writer.pause()
    etcd.start("etcd-east")
    etcd.start("etcd-witness")
    back = poll_until(etcd.leader, timeout=30, what="a leader once quorum is back")
    writer.resume()
    try:
        client.create_environment("cp-quorum-back", region="west")  # decisions resume
        assert back in etcd.deployment.controller_specs()
        assert "cp-no-quorum" not in {e["name"] for e in client.environments()}
        ops = [o for o in client.operations(limit=100)
               if o.get("params", {}).get("environment") == env]
        assert all(o["state"] != "running" for o in ops)
        acked = len(writer.acked)
        poll_until(lambda: len(writer.acked) > acked + 10, what="writes after quorum returns")
    finally:
        writer.stop()
    writer.check(client, env)
    assert client.environment(env)["epoch"] == 3, "nothing was failed over meanwhile"
