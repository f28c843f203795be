"""The controller SIGKILLed at each step of a failover (invariant 7), under load.

The controller is started with `TANDEM_PAUSE_AT=<kind>/<step>:<start|end>`: an operation
that reaches that point parks there (`:end` is after the step did its work, before its end
was written, the hardest point to resume from). The test waits for the controller's log to
say so, SIGKILLs it, starts it again without the pause, and checks that the operation
resumed and finished, with exactly one writable primary and every acknowledged write kept.
"""

from __future__ import annotations

import time

import httpx
import pytest

from tandemdb.testing import IdWriter, LocalDeployment, caught_up, poll_until

STEPS = ["fence:start", "fence:end", "catch-up:end", "promote:end", "switch-routing:end",
         "reverse:end", "release:end"]
# Refusals a held write may meet while the controller is down (the call did not run).
BENIGN = ("switching", "no_lease", "unavailable")


def restart_controller(cluster: LocalDeployment, pause_at: str | None) -> None:
    if cluster.processes.get("controller") and cluster.processes["controller"].poll() is None:
        cluster.stop("controller")
    cluster.start("controller", env={"TANDEM_PAUSE_AT": pause_at} if pause_at else None)
    # A planned failover starts only when both regions' nodes have heartbeated to it.
    poll_until(lambda: all(n["healthy"] for r in cluster.client.regions() for n in r["nodes"]),
               what="nodes healthy after the controller restart")


def paused(cluster: LocalDeployment, point: str, since: int) -> bool:
    text = cluster.log_file("controller").read_text(errors="replace")[since:]
    return f"operation paused at {point}" in text


def writable_regions(cluster: LocalDeployment, env: str) -> list[str]:
    """Regions whose node takes a direct write (one that changes no row)."""
    found = []
    for region in ("west", "east"):
        url = cluster.deployment.node_url(cluster.node_of(region))
        answer = httpx.post(f"{url}/v1/environments/{env}/sql",
                            headers={"X-Tandem-Secret": cluster.deployment.secret},
                            json={"statements": [{"sql": "DELETE FROM events WHERE id = -1"}]})
        if answer.status_code == 200:
            found.append(region)
        else:
            assert answer.json()["error"]["code"] in ("not_primary", "fenced"), answer.text
    return found


@pytest.fixture(scope="module")
def crash_cluster(cluster: LocalDeployment):
    yield cluster
    restart_controller(cluster, None)  # leave it running without the pause


@pytest.mark.parametrize("kind", ["single", "region"])
def test_controller_killed_at_each_failover_step(crash_cluster: LocalDeployment, kind: str):
    cluster, client = crash_cluster, crash_cluster.client
    envs = [f"crash-{kind}-{i}" for i in range(1 if kind == "single" else 2)]
    for env in envs:
        client.create_environment(env, region="west")
        client.sql(env, "CREATE TABLE events(id INTEGER, at REAL)")
    writer = IdWriter(client, envs[0]).start()
    points = STEPS if kind == "single" else ["promote:end"]
    epoch, primary = 1, "west"
    try:
        for point in points:
            log_size = cluster.log_file("controller").stat().st_size
            restart_controller(cluster, f"environment.failover/{point}")
            op = (client.failover(envs[0]) if kind == "single"
                  else client.region_failover(primary))
            poll_until(lambda p=point, n=log_size: paused(cluster, f"environment.failover/{p}",
                                                          n),
                       timeout=30, what=f"the operation to park at {point}")
            cluster.kill("controller")
            restart_controller(cluster, None)
            done = client.wait_operation(op["id"], timeout=60)
            assert done["state"] == "succeeded", (point, done)
            epoch, primary = epoch + 1, "east" if primary == "west" else "west"
            for env in envs:
                view = client.environment(env)
                assert (view["epoch"], view["primary_region"], view["state"]) == \
                    (epoch, primary, "active"), (point, view)
                assert writable_regions(cluster, env) == [primary], point
            time.sleep(0.2)
    finally:
        writer.stop()
    assert all(any(code in message for code in BENIGN) for _, message in writer.failed), \
        writer.failed[:5]
    assert writer.epochs == sorted(writer.epochs)
    poll_until(lambda: caught_up(client, writer.env), what="caught up")
    writer.check(client)
    lsn = client.environment(writer.env)["primary_lsn"]
    writer.check(client, region="west" if primary == "east" else "east", min_lsn=lsn)
