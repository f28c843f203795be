"""A whole deployment started as on separate hosts (issue 12, docs/deploy.md).

Each site has a loopback address of its own (west 127.0.0.2, east 127.0.0.3, the witness
127.0.0.4) and every process its own config file, data dir and log: three etcd members
(`etcd_local.command`), three controllers, a node per region and a gateway per region
(`tandem serve KIND --config FILE`). Through a client that knows both gateways, writes go
on across a planned region failover of west and every acknowledged id is there after it
(invariant 1); `GET /v1/control-plane` sees the whole control plane; no process wrote into
another's data dir, and none listens on an address not its own.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tandemdb.client import Client, TandemError
from tandemdb.common.deployment import Deployment
from tandemdb.common.layout import Shape
from tandemdb.testing import IdWriter, caught_up, nodes_healthy, poll_until
from tests.integration.hosts import LOOPBACK, SITES, Hosts, spread

ENVS = ["far-a", "far-b"]


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosts]:
    root = tmp_path_factory.mktemp("hosts")
    # `data` is each process's own (config_for); the planned one must stay unused.
    deployment = Deployment.plan(root / "unused", [("west", "east")], 1, 0,
                                 Shape.parse("etcd"))
    spread(deployment, SITES)
    cluster = Hosts(deployment, root)
    try:
        cluster.start_all()
        yield cluster
    finally:
        cluster.stop_all()


@pytest.fixture(scope="module")
def client(hosts: Hosts) -> Iterator[Client]:
    deployment = hosts.deployment
    with Client(deployment.gateway_urls(), deployment.token) as client:
        poll_until(lambda: nodes_healthy(client), 20.0, 0.1, "every node's first heartbeat",
                   ignore=(TandemError,))
        yield client


@pytest.fixture(scope="module")
def environments(client: Client) -> list[str]:
    """Production environments at home in west: a replica on west-1 and east-1 each."""
    for env in ENVS:
        client.create_environment(env, region="west")
    return ENVS


def test_writes_survive_a_region_failover_across_hosts(hosts: Hosts, client: Client,
                                                        environments: list[str]):
    assert [urlsplit(u).hostname for u in client.urls] == [SITES["west"], SITES["east"]]
    writer = IdWriter(client, environments)
    writer.create_table()
    writer.start()
    try:
        poll_until(lambda: len(writer.acks) >= 20, 15.0, what="20 writes acknowledged")
        op = client.region_failover("west")
        done = client.wait_operation(op["id"], timeout=30)
        assert done["state"] == "succeeded", done
        moved = len(writer.acks)
        poll_until(lambda: len(writer.acks) >= moved + 20, 15.0,
                   what="20 more writes after the failover")
    finally:
        writer.stop()
    assert not writer.failed, writer.failed[:5]
    assert {e["name"]: e["primary_region"] for e in client.environments()
            if e["name"] in environments} == dict.fromkeys(environments, "east")
    assert {a.epoch for a in writer.acks[-10:]} == {2}
    for env in environments:
        assert writer.acked_ids(env)
        poll_until(partial(caught_up, client, env), 15.0, what=f"{env} caught up")
        writer.check(client, env)


def test_control_plane_sees_every_site(hosts: Hosts, client: Client):
    deployment = hosts.deployment
    view = client.control_plane()
    controllers = {c["name"]: c for c in view["controllers"]}
    assert set(controllers) == {"controller-west", "controller-east", "controller-witness"}
    assert all(c["reachable"] and c["url"] == deployment.url(name)
               for name, c in controllers.items()), controllers
    leaders = [name for name, c in controllers.items() if c["leading"]]
    assert len(leaders) == 1 and view["leader"]["name"] == leaders[0], view
    store = view["store"]
    assert store["kind"] == "etcd" and store["quorum"] is True, store
    assert {m["name"]: (m["healthy"], m["client_urls"]) for m in store["members"]} == {
        f"etcd-{site}": (True, [f"http://{host}:{deployment.address(f'etcd-{site}')[1]}"])
        for site, host in SITES.items()}
    assert {g["name"]: (g["region"], g["reachable"], g["url"]) for g in view["gateways"]} == {
        f"gateway-{r}": (r, True, f"http://{SITES[r]}:{deployment.address(f'gateway-{r}')[1]}")
        for r in ("west", "east")}


# What each kind of process keeps in its data dir, at the top.
OWN_ENTRIES = {"etcd": {"member"}, "node": {"nodes"}, "controller": {"controller"},
               "gateway": set()}


def test_every_process_keeps_to_its_own_data_dir(hosts: Hosts, environments: list[str]):
    assert not (hosts.root / "unused").exists()
    for name in hosts.names():
        top = {p.name for p in hosts.dir(name).iterdir()}
        assert top <= OWN_ENTRIES[hosts.kind(name)], f"{name} wrote {top}"
        assert {p.name for p in (hosts.root / name).iterdir()} <= {"config.json", "data",
                                                                    "log"}
    for node in hosts.names("node"):
        assert [p.name for p in (hosts.dir(node) / "nodes").iterdir()] == [node]
        envs = hosts.dir(node) / "nodes" / node / "envs"
        assert {p.name for p in envs.iterdir()} == set(environments), node
        assert all(any(p.is_file() for p in (envs / env).rglob("*")) for env in environments)
    for name in hosts.names("etcd"):
        assert (hosts.dir(name) / "member" / "wal").is_dir()


def listens(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect((host, port))
        except ConnectionRefusedError:
            return False
    return True


def ports_of(deployment: Deployment, name: str) -> tuple[str, list[int]]:
    """The host a process binds and every port it listens on there."""
    member = deployment.etcd_members().get(name)
    if member is not None:
        return member["host"], [member["client_port"], member["peer_port"]]
    host, port = deployment.address(name)
    return host, [port]


def test_every_process_listens_on_its_own_address_only(hosts: Hosts):
    for name in hosts.names():
        own, ports = ports_of(hosts.deployment, name)
        assert own == SITES[hosts.deployment.site_of(name) or ""], name
        for port in ports:
            assert listens(own, port), f"{name} does not listen on {own}:{port}"
            elsewhere = [h for h in LOOPBACK if h != own and listens(h, port)]
            assert not elsewhere, f"{name} also listens on {elsewhere} (port {port})"


def test_serve_reads_nothing_but_its_config(hosts: Hosts):
    """Each config file names its process and its own data dir, and no other's."""
    for name in hosts.names():
        if hosts.kind(name) == "etcd":
            continue
        config = hosts.root / name / "config.json"
        deployment, named = Deployment.from_config(config)
        assert named == name and Path(deployment.data) == hosts.dir(name)
