"""A whole site lost (issue 12, test 3): `tandem region outage west` on a deployment whose
control plane runs on etcd takes out west's nodes, its controller, its gateway and its etcd
member at once, as a lost data centre would.

With `--grace-seconds 2`, a controller in east or the witness site (whichever leads once
west's is gone) declares west down and forces it over; a writer that knows both gateways
goes on through gateway-east; when west comes back (`tandem region recover west`), its
replicas rejoin and the lost writes are listed exactly: the acknowledged ids missing from
east, plus at most writes whose outcome was unknown (invariants 3, 4, 5).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from typer.testing import CliRunner

from tandemdb import local
from tandemdb.cli.main import app
from tandemdb.common.layout import Shape
from tandemdb.testing import IdWriter, LocalDeployment, poll_until

GRACE, LEASE_TTL = 2.0, 1.5
ENVS = ["site-a", "site-b"]
runner = CliRunner()


@pytest.fixture
def site() -> Iterator[LocalDeployment]:
    with LocalDeployment.temporary(shape=Shape.parse("etcd"), grace_seconds=GRACE,
                                   lease_ttl=LEASE_TTL, prefix="tandem-site-") as cluster:
        cluster.write_run_file()  # `tandem region outage|recover` find the processes there
        try:
            yield cluster
        except BaseException:
            print(cluster.logs_tail())
            raise
        finally:
            local.stop_detached(cluster.data)  # what `recover` started as well


def tandem(*args: str) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def leading(cluster: LocalDeployment) -> str | None:
    for name in cluster.deployment.controller_specs():
        try:
            if httpx.get(cluster.url(name) + "/healthz", timeout=1.0).json()["leading"]:
                return name
        except (httpx.HTTPError, ValueError, KeyError):
            continue
    return None


def west(cluster: LocalDeployment) -> dict:
    return next(r for r in cluster.client.regions() if r["name"] == "west")


def test_a_lost_site_is_forced_over_by_a_surviving_controller(site: LocalDeployment):
    client, d = site.client, site.deployment
    gateway_east = d.url("gateway-east")
    for env in ENVS:
        client.create_environment(env, region="west")
    writer = IdWriter(client, ENVS[0])
    writer.create_table(keyed=False)
    writer.start()
    try:
        poll_until(lambda: (client.environment(ENVS[0])["primary_lsn"] or 0) > 20,
                   what="writes the controller has heard of")
        hit = tandem("region", "outage", "west", "--data", str(site.data))
        assert set(hit["killed"]) == {"etcd-west", "controller-west", "gateway-west",
                                      *d.nodes_in("west")}, hit
        poll_until(lambda: west(site)["state"] == "failed-over", timeout=60, interval=0.2,
                   what="the forced failover of west", ignore=(Exception,))
        decider = leading(site)
        assert decider in ("controller-east", "controller-witness"), decider
        op = client.operation(west(site)["operation"], wait=30)
        assert (op["kind"], op["params"]["mode"], op["state"]) == ("region.failover",
                                                                   "forced", "succeeded")
        acked = len(writer.acked)
        poll_until(lambda: len(writer.acked) > acked + 10, what="writes resumed in east")
    finally:
        writer.stop()
    assert client.url == gateway_east, "the writer went on through gateway-east"
    for env in ENVS:
        view = client.environment(env)
        assert (view["primary_region"], view["epoch"]) == ("east", 2), view
    forks = {e["environment"]: e["data"]["fork_lsn"] for e in client.events(after=0)["events"]
             if e["type"] == "failover.data_loss"}
    assert set(forks) == set(ENVS)
    ids = {r[0] for r in client.sql(ENVS[0], "SELECT id FROM events")["results"][0]["rows"]}
    for i, lsn, epoch in zip(writer.acked, writer.lsns, writer.epochs, strict=True):
        assert i in ids or (epoch == 1 and lsn > forks[ENVS[0]]), (i, lsn, epoch)

    back = tandem("region", "recover", "west", "--data", str(site.data))
    assert set(back["started"]) >= {"etcd-west", "controller-west", "gateway-west"}, back
    poll_until(lambda: all(not any(r.get("behind") for r in client.environment(e)["replicas"])
                           for e in ENVS), timeout=60, interval=0.2,
               what="west's replicas to rejoin")
    missing = {i for i in writer.acked if i not in ids}
    kept = {c["after"]["id"] for b in client.lost(ENVS[0])["bundles"] for e in b["entries"]
            for c in e["changes"] if c["table"] == "events" and c["op"] == "insert"}
    unknown = {i for i, _ in writer.failed}
    assert missing <= kept and kept - missing <= unknown, (missing ^ kept)
    view = client.control_plane()
    assert view["store"]["quorum"] and all(m["healthy"] for m in view["store"]["members"])
    assert all(c["reachable"] for c in view["controllers"]), view["controllers"]
    poll_until(lambda: all(g["reachable"] for g in client.control_plane()["gateways"]),
               timeout=15, what="both gateways back")
