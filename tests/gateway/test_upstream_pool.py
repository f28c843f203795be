"""The gateway's upstream pool never sends a request on a connection its peer has closed, and
never sends a call twice that may have run (issue 9, item 4).

A real gateway process forwards to `Upstream`, a raw server in the test that closes the
connection after a 500 without saying so, or hangs up mid-request; it counts what arrives,
so "the write ran exactly once" is checked where it would run.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest

from tandemdb.testing import LocalDeployment

from .cluster import deployed as running
from .upstream import ENV, Upstream

SQL = f"/v1/environments/{ENV}/sql"


@pytest.fixture(scope="module")
def upstream(
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalDeployment, Upstream]]:
    """Shared by the module's tests: each names its calls apart."""
    with running(tmp_path_factory.mktemp("pool") / "data", start=()) as deployed:
        server = Upstream(deployed.deployment).start()
        try:
            deployed.start("gateway")
            yield deployed, server
        finally:
            deployed.stop("gateway")
            server.stop()


def client(deployed: LocalDeployment) -> httpx.Client:
    """Each client has its own connection to the gateway, as separate users would."""
    return httpx.Client(base_url=deployed.deployment.gateway_url, timeout=20,
                        headers={"Authorization": f"Bearer {deployed.deployment.token}"})


def write(http: httpx.Client, tag: str) -> httpx.Response:
    return http.post(SQL, json={"statements": [{"sql": tag}]})


def test_a_500_does_not_cost_the_next_client_its_write(upstream):
    deployed, server = upstream
    with client(deployed) as failing, client(deployed) as other:
        assert write(other, "warm-up").status_code == 200
        for i in range(10):
            answer = write(failing, f"FAIL-{i}")
            assert answer.status_code == 500, answer.text  # passed back as it came
            answer = write(other, f"w-{i}")
            assert answer.status_code == 200, answer.text
    counts = server.tags()
    assert all(counts[f"w-{i}"] == 1 for i in range(10)), counts
    assert all(counts[f"FAIL-{i}"] == 1 for i in range(10)), counts  # never retried


def test_the_same_holds_on_the_way_to_the_controller(upstream):
    deployed, server = upstream
    with client(deployed) as failing, client(deployed) as other:
        for i in range(5):
            assert failing.post("/v1/webhooks", json={"url": f"FAIL-hook-{i}"}).status_code == 500
            answer = other.post("/v1/webhooks", json={"url": f"hook-{i}"})
            assert answer.status_code == 201, answer.text
    counts = server.tags()
    assert all(counts[f"hook-{i}"] == 1 and counts[f"FAIL-hook-{i}"] == 1 for i in range(5)), counts


def test_concurrent_clients_each_write_runs_exactly_once(upstream):
    deployed, server = upstream
    answers: dict[str, int] = {}

    def writer(name: str, fail_every: int) -> None:
        with client(deployed) as http:
            for i in range(12):
                tag = f"FAIL-{name}-{i}" if fail_every and i % fail_every == 0 else f"{name}-{i}"
                answers[tag] = write(http, tag).status_code

    threads = [threading.Thread(target=writer, args=(f"c{n}", 3 if n == 0 else 0))
               for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    counts = server.tags()
    assert len(answers) == 48
    for tag, status in answers.items():
        assert status == (500 if tag.startswith("FAIL") else 200), (tag, status)
        assert counts[tag] == 1, (tag, counts[tag])


def test_a_call_that_may_have_run_is_not_sent_again(upstream):
    deployed, server = upstream
    with client(deployed) as http:
        answer = write(http, "HANG_UP-sql")
        assert answer.status_code == 502, answer.text
        error = answer.json()["error"]
        assert error["code"] == "outcome_unknown"
        assert "may or may not have run" in error["message"]
        # DELETE is idempotent to HTTP, so aiohttp would resend it by itself; a delete of
        # a file is a write that bumps the lsn, so it must not be.
        answer = http.delete(f"/v1/environments/{ENV}/files/HANG_UP-file")
        assert answer.status_code == 502, answer.text
        assert answer.json()["error"]["code"] == "outcome_unknown"
        assert write(http, "after").status_code == 200
    assert server.tags()["HANG_UP-sql"] == 1
    assert server.tags("DELETE")["HANG_UP-file"] == 1


def test_a_read_whose_connection_broke_is_asked_again_on_a_new_one(upstream):
    deployed, server = upstream
    with client(deployed) as http:
        answer = http.get(f"/v1/environments/{ENV}/files/HANG_UP_ONCE-read")
        assert answer.status_code == 200, answer.text  # a GET changes nothing: safe to resend
    assert server.tags("GET")["HANG_UP_ONCE-read"] == 2
