"""What only the etcd store has: fencing, the election primitives, and how it behaves when
etcd members die, lose quorum, hang or were never there. Real etcd processes throughout."""

from __future__ import annotations

import re
import signal
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tandemdb.controller.store import Compacted, NotLeader, StoreError, Txn, open_store
from tandemdb.controller.store.etcd import EtcdError, EtcdStore, LeaseLost
from tandemdb.local import free_base_port
from tests.etcd_fixture import etcd_cluster, shared_etcd, unique_prefix

LEADER = "leader"


@pytest.fixture
def endpoints(request: pytest.FixtureRequest) -> list[str]:
    return shared_etcd(request).endpoints


@pytest.fixture
def pair(endpoints: list[str]) -> Iterator[tuple[EtcdStore, EtcdStore]]:
    """Two controllers' stores on the same keys (one prefix), each its own connections."""
    prefix = unique_prefix()
    a, b = EtcdStore(endpoints, prefix=prefix), EtcdStore(endpoints, prefix=prefix)
    yield a, b
    a.close()
    b.close()


def elected(store: EtcdStore, name: str, ttl: int = 5) -> int:
    """`name` takes the leader key and fences `store` on it; the lease."""
    lease = store.grant(ttl)
    assert store.acquire(LEADER, name, lease)
    store.fence(LEADER, name)
    return lease


# -- fencing -----------------------------------------------------------------------------

def test_fenced_writes_go_through_while_the_leader_key_is_ours(pair):
    a, _ = pair
    elected(a, "ctl-a")
    version = a.put("environments/acme", {"epoch": 1})
    assert a.compare_and_set("environments/acme", version, {"epoch": 2})
    # A failed expectation is still just False / None, not NotLeader.
    assert a.compare_and_set("environments/acme", version, {"epoch": 3}) is False
    assert a.commit(Txn().expect("environments/acme", version).put("x", 1)) is None
    assert a.commit(Txn().put("events/1", {"id": 1})) is not None
    assert a.delete("events/1") is True
    assert a.get("environments/acme").value == {"epoch": 2}


def test_a_deposed_leader_cannot_write_a_single_key(pair):
    """The leader key moves to another controller (a's lease ran out, b took it): every
    kind of write a still tries fails whole with NotLeader and changes nothing."""
    a, b = pair
    lease = elected(a, "ctl-a")
    version = a.put("environments/acme", {"epoch": 1})
    a.put("events/1", {"id": 1})
    a.revoke(lease)  # as if it had expired while a was paused
    assert b.holder(LEADER) is None
    elected(b, "ctl-b")
    before = b.revision()
    attempts = {
        "put": lambda: a.put("environments/acme", {"epoch": 99}),
        "compare_and_set": lambda: a.compare_and_set("environments/acme", version, {"x": 1}),
        "compare_and_set of a new key": lambda: a.compare_and_set("new", None, 1),
        "delete": lambda: a.delete("events/1"),
        "commit": lambda: a.commit(Txn().expect("environments/acme", version)
                                   .put("environments/acme", {"epoch": 99}).put("new", 1)),
    }
    for what, write in attempts.items():
        with pytest.raises(NotLeader, match=r"no longer holds the leader key 'leader'.*ctl-b"):
            write()
        assert b.revision() == before, what
    assert b.get("environments/acme").value == {"epoch": 1} and b.get("new") is None
    assert b.get("events/1") is not None
    # The new leader writes; the fence of a store follows its own claim only.
    assert b.put("environments/acme", {"epoch": 2}) > before


def test_a_fence_on_a_vanished_key_refuses_and_fence_none_lifts_it(pair):
    a, _ = pair
    lease = elected(a, "ctl-a")
    a.revoke(lease)
    with pytest.raises(NotLeader, match="nobody holds it now"):
        a.put("k", 1)
    a.fence(LEADER, None)
    assert a.put("k", 1) > 0


# -- election primitives -----------------------------------------------------------------

def test_acquire_holder_and_a_lease_that_is_not_kept_alive(pair):
    a, b = pair
    lease = a.grant(2)
    assert a.acquire(LEADER, {"name": "ctl-a"}, lease)
    other = b.grant(2)
    assert b.acquire(LEADER, {"name": "ctl-b"}, other) is False  # held: nothing changes
    holder = b.holder(LEADER)
    assert holder is not None and holder.value == {"name": "ctl-a"}
    assert holder.lease == lease and holder.create_revision == holder.mod_revision > 0
    remaining = a.lease_remaining(lease)
    assert remaining is not None and 0 < remaining <= 2
    # Nobody keeps a's lease alive: within its ttl (plus etcd's lease tick) the key is
    # gone. b keeps its own alive, and then takes the key.
    deadline = time.monotonic() + 6
    while b.holder(LEADER) is not None:
        assert time.monotonic() < deadline, "the leader key outlived its lease"
        assert b.keepalive(other) > 0
        time.sleep(0.1)
    assert a.lease_remaining(lease) is None
    with pytest.raises(LeaseLost, match="expired or was revoked"):
        a.keepalive(lease)
    assert b.acquire(LEADER, {"name": "ctl-b"}, other)
    assert a.holder(LEADER).value == {"name": "ctl-b"}


def test_keepalive_keeps_the_key_past_its_ttl(pair):
    a, _ = pair
    lease = a.grant(2)
    assert a.acquire(LEADER, "ctl-a", lease)
    for _ in range(8):  # 4 s: twice the ttl
        assert a.keepalive(lease) == 2
        time.sleep(0.5)
    assert a.holder(LEADER).value == "ctl-a"
    a.revoke(lease)
    assert a.holder(LEADER) is None
    a.revoke(lease)  # twice is fine


def test_open_store_from_a_spec(tmp_path, endpoints):
    prefix = unique_prefix()
    store = open_store(tmp_path, {"kind": "etcd", "endpoints": endpoints, "prefix": prefix})
    try:
        assert isinstance(store, EtcdStore) and store.prefix == prefix
        store.put("k", 1)
    finally:
        store.close()
    assert not (tmp_path / "store.sqlite").exists()
    with pytest.raises(ValueError, match="unknown store kind 'zk'"):
        open_store(tmp_path, {"kind": "zk"})
    with pytest.raises(ValueError, match="at least one endpoint"):
        open_store(tmp_path, {"kind": "etcd", "endpoints": []})


def test_a_value_over_etcds_request_limit_is_refused_and_writes_nothing(pair):
    a, _ = pair
    a.put("lost/acme/1", {"entries": []})
    before = a.revision()
    with pytest.raises(EtcdError, match="larger than max"):
        a.put("lost/acme/1", {"entries": ["x" * (9 << 20)]})  # etcd_local allows 8 MiB
    assert a.get("lost/acme/1").value == {"entries": []} and a.revision() == before
    # Over etcd's own default of 1.5 MiB, within the limit etcd_local sets.
    assert a.put("lost/acme/1", {"entries": ["x" * (2 << 20)]}) == before + 1


# -- etcd's own history and restarts -----------------------------------------------------

def test_a_watch_behind_etcds_compaction_is_compacted(tmp_path):
    with etcd_cluster(tmp_path) as cluster:
        store = EtcdStore(cluster.endpoints, prefix="t/")
        try:
            first = store.put("k", 0)
            for i in range(5):
                store.put("k", i + 1)
            httpx.post(f"{cluster.endpoints[0]}/v3/kv/compaction",
                       json={"revision": str(first + 3)}).raise_for_status()
            with pytest.raises(Compacted, match="compacted"):
                store.watch("", first, timeout=0)
            assert [c.value for c in store.watch("", first + 3, timeout=0)] == [4, 5]
        finally:
            store.close()


def test_a_member_restarted_on_its_data_dir_keeps_everything(tmp_path):
    with etcd_cluster(tmp_path) as cluster:
        store = EtcdStore(cluster.endpoints, prefix="t/")
        try:
            version = store.put("environments/acme", {"epoch": 3})
            cluster.kill("etcd-0")
            unreachable = re.escape(f"etcd unreachable at {cluster.endpoints[0]}")
            with pytest.raises(StoreError, match=unreachable):
                store.get("environments/acme")
            cluster.start("etcd-0")
            cluster.wait_ready()
            assert store.get("environments/acme") == ({"epoch": 3}, version)
            assert store.put("x", 1) == version + 1  # the revision goes on
        finally:
            store.close()


# -- members dying, quorum, hangs ----------------------------------------------------------

def test_three_members_survive_one_loss_and_stop_without_quorum(tmp_path):
    """Kill one member: no effect. Kill two: calls fail within a bounded time with a clear
    error. Bring them back: everything works again, nothing written was lost."""
    with etcd_cluster(tmp_path, members=3) as cluster:
        store = EtcdStore(cluster.endpoints, prefix="t/")
        try:
            assert [m["healthy"] for m in store.members()] == [True] * 3
            assert sum(m["leader"] for m in store.members()) == 1
            store.put("before", 1)
            cluster.kill("etcd-0")  # the endpoint the store tries first
            # If it led, the others elect a new leader first (about 1-2 s; a write sent in
            # between times out: etcd 3.4 drops proposals while it has no leader).
            cluster.wait_ready()
            assert store.put("one-down", 1) > 0 and store.get("before").value == 1
            health = {m["name"]: m["healthy"] for m in store.members()}
            assert health == {"etcd-0": False, "etcd-1": True, "etcd-2": True}

            cluster.kill("etcd-1")
            for call in (lambda: store.put("no-quorum", 1), lambda: store.get("before")):
                start = time.monotonic()
                with pytest.raises(StoreError, match="etcd"):
                    call()
                assert time.monotonic() - start < 5
            assert not any(m["healthy"] for m in store.members())

            cluster.start("etcd-0")
            cluster.start("etcd-1")
            cluster.wait_ready()
            assert store.get("before").value == 1 and store.get("one-down").value == 1
            assert store.put("after", 1) > 0
            assert sum(m["leader"] for m in store.members()) == 1
        finally:
            store.close()


def test_a_write_to_a_hung_member_is_not_sent_again(tmp_path):
    """A member takes the request and never answers (SIGSTOP): the write fails as of
    unknown outcome and is not resent to a healthy member; a read moves on to one."""
    with etcd_cluster(tmp_path, members=3) as cluster:
        store = EtcdStore(cluster.endpoints, prefix="t/", timeout=1.0)
        reader = EtcdStore(cluster.endpoints[1:], prefix="t/")
        try:
            store.put("k", 0)
            cluster.processes["etcd-0"].send_signal(signal.SIGSTOP)
            start = time.monotonic()
            with pytest.raises(StoreError, match="outcome is unknown"):
                store.put("k", 1)
            assert time.monotonic() - start < 3
            assert reader.get("k").value == 0  # not written through another member
            assert store.get("k").value == 0  # a read may go elsewhere
            assert store.put("k", 2) > 0  # and the next write avoids the hung member
        finally:
            cluster.processes["etcd-0"].send_signal(signal.SIGCONT)
            store.close()
            reader.close()


def test_unreachable_endpoints_give_a_clear_error_naming_them():
    base = free_base_port(2)
    refused = [f"http://127.0.0.1:{base}", f"http://127.0.0.1:{base + 1}"]
    store = EtcdStore(refused, prefix="t/")
    try:
        start = time.monotonic()
        with pytest.raises(StoreError) as caught:
            store.put("k", 1)
        assert time.monotonic() - start < 10
        message = str(caught.value)
        assert message.startswith("etcd unreachable at ") and all(u in message for u in refused)
        assert [m["healthy"] for m in store.members()] == [False, False]
    finally:
        store.close()


def test_a_member_that_never_answers_bounds_every_call():
    """A listener that accepts and says nothing (a hung host): reads and writes give up
    within the store's timeout, naming the endpoint."""
    silent = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{silent.getsockname()[1]}"
    store = EtcdStore([url], prefix="t/", timeout=1.0)
    try:
        for call in (lambda: store.get("k"), lambda: store.put("k", 1),
                     lambda: store.watch("", 0, timeout=5)):
            start = time.monotonic()
            with pytest.raises(StoreError, match=re.escape(url)):
                call()
            assert time.monotonic() - start < 3
    finally:
        store.close()
        silent.close()
