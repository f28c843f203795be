"""A halted stream end to end (issue 9, poison entries), with real processes: the secondary
cannot apply an entry, so its stream halts; the controller emits `replication.halted`, the
metrics, the environment's answer and the CLI say so and what to do; the other
environments stream on; a controller restart does not tell it twice; a re-seed brings the
secondary back to the primary's checksum.

The secondary is made unable to apply by deleting a row from its SQLite file behind its
node's back, so that the next update of that row conflicts: no engine bug is needed.
"""

from __future__ import annotations

import re

import httpx
import pytest
from typer.testing import CliRunner

from tandemdb.cli.main import app
from tandemdb.client import TandemError
from tandemdb.common.http import SECRET_HEADER
from tandemdb.testing import LocalDeployment, caught_up, poll_until
from tests.tamper import tamper

ENV, OTHER = "halt-acme", "halt-globex"


def gauge(cluster: LocalDeployment, process: str, name: str, labels: str) -> float | None:
    dep = cluster.deployment
    text = httpx.get(cluster.url(process) + "/metrics",
                     headers={SECRET_HEADER: dep.secret,
                              "authorization": f"Bearer {dep.token}"}).text
    found = re.search(rf"^{name}{{{re.escape(labels)}}} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else None


def secondary(cluster: LocalDeployment, env: str) -> dict:
    view = cluster.client.environment(env)
    return next(r for r in view["replicas"] if r["role"] == "secondary")


def events_of(cluster: LocalDeployment, kind: str, env: str) -> list[dict]:
    return [e for e in cluster.client.events(after=0)["events"]
            if e["type"] == kind and e["environment"] == env]


def tandem(cluster: LocalDeployment, *args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--data", str(cluster.deployment.data)],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, (args, result.output)
    return result.stdout


def test_a_halted_stream_is_told_shown_and_reseeded(cluster: LocalDeployment) -> None:
    c = cluster.client
    for env in (ENV, OTHER):
        c.create_environment(env)
        c.sql(env, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        c.sql(env, "INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')")
    poll_until(lambda: caught_up(c, ENV) and caught_up(c, OTHER), what="catch-up")
    assert secondary(cluster, ENV)["state"] == "streaming"

    tamper(cluster.deployment.data, "east-1", ENV, "DELETE FROM t WHERE id = 2")
    poison = c.sql(ENV, "UPDATE t SET v = 'B' WHERE id = 2")["lsn"]
    poll_until(lambda: secondary(cluster, ENV)["state"] == "halted", what="the halt")

    # The environment's answer: the state, what stopped, and the fix.
    replica = secondary(cluster, ENV)
    error = replica["error"]
    assert (replica["region"], error["code"], error["lsn"], error["cause"]) == (
        "east", "replication_halted", poison, "apply_conflict")
    assert replica["applied_lsn"] == poison - 1
    assert f"tandem env reseed {ENV} --region east" in error["fix"]
    assert f"halted at lsn {poison}" in error["message"]

    # The event, once, with environment, region, node, lsn and error.
    poll_until(lambda: events_of(cluster, "replication.halted", ENV), what="the event")
    [event] = events_of(cluster, "replication.halted", ENV)
    assert (event["region"], event["data"]["node"], event["data"]["lsn"]) == (
        "east", "east-1", poison)
    assert event["data"]["error"]["code"] == "apply_conflict"
    assert "row not found" in event["data"]["error"]["message"]

    # The metrics, on the secondary's node and on the controller.
    assert gauge(cluster, "east-1", "tandem_replication_halted", f'env="{ENV}"') == 1
    assert gauge(cluster, "east-1", "tandem_replication_halted", f'env="{OTHER}"') == 0
    assert gauge(cluster, "controller", "tandem_controller_replication_halted",
                 f'env="{ENV}",region="east"') == 1

    # The other environment streams on, from the same primary node to the same secondary.
    c.sql(OTHER, "INSERT INTO t VALUES (4, 'd')")
    poll_until(lambda: caught_up(c, OTHER), what=f"{OTHER} to catch up")
    assert secondary(cluster, OTHER)["state"] == "streaming"

    # The CLI: status marks it, env show says what happened and what to do.
    fix = f"tandem env reseed {ENV} --region east"
    status = tandem(cluster, "status")
    assert f"HALTED at lsn {poison}" in status and fix in status
    shown = tandem(cluster, "env", "show", ENV)
    assert f"replication of {ENV} to east halted at lsn {poison}" in shown
    assert "not being updated" in shown and fix in shown
    assert "HALTED" not in tandem(cluster, "env", "show", OTHER)

    # A controller restart neither forgets the halt nor tells of it again.
    cluster.stop("controller")
    cluster.start("controller")
    poll_until(lambda: secondary(cluster, ENV)["state"] == "halted", what="the halt again")
    c.sql(OTHER, "INSERT INTO t VALUES (5, 'e')")
    poll_until(lambda: caught_up(c, OTHER), what=f"{OTHER} to catch up")
    assert len(events_of(cluster, "replication.halted", ENV)) == 1

    # The fix, as the CLI offers it: the secondary is copied afresh and streams on.
    assert "re-seeding" in tandem(cluster, "env", "reseed", ENV, "--region", "east")
    poll_until(lambda: secondary(cluster, ENV)["state"] == "streaming"
               and caught_up(c, ENV), what="the re-seeded secondary to catch up")
    assert c.checksum(ENV, "east")["total"] == c.checksum(ENV, "west")["total"]
    poll_until(lambda: events_of(cluster, "replication.resumed", ENV), what="resumed")
    assert gauge(cluster, "east-1", "tandem_replication_halted", f'env="{ENV}"') == 0
    lsn = c.sql(ENV, "UPDATE t SET v = 'again' WHERE id = 2")["lsn"]
    rows = c.sql(ENV, "SELECT v FROM t WHERE id = 2", read_region="east", min_lsn=lsn)
    assert rows["results"][0]["rows"] == [["again"]]


@pytest.mark.parametrize(("env", "region", "status", "code"), [
    (OTHER, "west", 409, "not_secondary"),
    (OTHER, "mars", 404, "no_replica"),
    ("halt-nobody", "east", 404, "not_found"),
])
def test_reseed_refuses_what_it_cannot_do(cluster: LocalDeployment, env: str, region: str,
                                          status: int, code: str) -> None:
    if env == OTHER:
        try:
            cluster.client.create_environment(OTHER)
        except TandemError as exc:
            assert exc.status == 409  # created by the test above
    with pytest.raises(TandemError) as caught:
        cluster.client.reseed(env, region)
    assert (caught.value.status, caught.value.code) == (status, code)


def test_reseed_takes_no_body(cluster: LocalDeployment) -> None:
    dep = cluster.deployment
    answer = httpx.post(f"{dep.gateway_url}/v1/environments/{OTHER}/replicas/east/reseed",
                        headers={"authorization": f"Bearer {dep.token}"},
                        json={"from_lsn": 3})
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "bad_request"
