"""Several gateway URLs in the SDK (client/gateways.py): a call that cannot have run moves
on to the next gateway and the client sticks to the one that answered; a write whose
outcome is unknown is sent exactly once. Live gateways are real processes; the dead one is
a refused port, the silent one a socket that takes the request and never answers."""

from __future__ import annotations

import asyncio
import io

import pytest

from tandemdb.client import AsyncClient, Client, TandemError
from tandemdb.testing import LocalDeployment

from .silent import SilentServer

TABLE = "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"


def failure(call) -> TandemError:
    with pytest.raises(TandemError) as caught:
        call()
    return caught.value


def new_env(live: LocalDeployment, name: str) -> str:
    live.client.create_environment(name, "sandbox", region="west")
    live.client.sql(name, TABLE)
    return name


def count(live: LocalDeployment, env: str, value: str) -> int:
    answer = live.client.sql(env, "SELECT count(*) FROM t WHERE v = ?", [value])
    return answer["results"][0]["rows"][0][0]


# -- URL lists ------------------------------------------------------------------------------

def test_one_string_with_commas_or_a_list():
    with Client("http://127.0.0.1:1/, http://127.0.0.1:2", "t") as client:
        assert client.urls == ["http://127.0.0.1:1", "http://127.0.0.1:2"]
        assert client.url == "http://127.0.0.1:1"
    with Client(["https://a.example:443", "http://b"], "t") as client:
        assert client.urls == ["https://a.example:443", "http://b"]
    with Client("http://127.0.0.1:7070", "t") as client:  # one URL, as before
        assert client.urls == [client.url] == ["http://127.0.0.1:7070"]


@pytest.mark.parametrize(("urls", "named"), [
    ("http://127.0.0.1:1,", "empty gateway URL in 'http://127.0.0.1:1,'"),
    (",http://127.0.0.1:1", "empty gateway URL"),
    ("http://a,,http://b", "empty gateway URL"),
    ("", "no gateway URL given"),
    ([], "no gateway URL given"),
    ("127.0.0.1:7070", "'127.0.0.1:7070' needs a scheme"),
    ("http://a,localhost:7070", "'localhost:7070' needs a scheme"),
    ("http://", "'http://' needs a scheme (http or https) and a host"),
    ("ftp://a", "'ftp://a' needs a scheme"),
    ("http://a:port", "'http://a:port' has a bad port"),
])
def test_bad_url_lists_are_refused_naming_the_url(urls, named: str):
    for cls in (Client, AsyncClient):
        with pytest.raises(ValueError) as caught:
            cls(urls, "t")
        assert named in str(caught.value)


# -- moving on, sticking --------------------------------------------------------------------

def test_reads_and_writes_go_to_the_live_gateway_and_stick(live: LocalDeployment,
                                                           dead_url: str):
    live_url = live.deployment.gateway_url
    with Client([dead_url, live_url], live.deployment.token) as client:
        assert client.url == dead_url
        client.create_environment("sticky", "sandbox", region="west")  # a write
        assert client.url == live_url
        client.sql("sticky", TABLE)
        client.sql("sticky", "INSERT INTO t(v) VALUES ('a')")
        assert client.sql("sticky", "SELECT v FROM t")["results"][0]["rows"] == [["a"]]
        assert client.put_file("sticky", "f.txt", b"hello")["size"] == 5
        # Something listens on the first URL now; the client keeps to the one that answered.
        with SilentServer(drop=True, port=int(dead_url.rsplit(":", 1)[1])) as first:
            assert client.get_file("sticky", "f.txt") == b"hello"
            client.sql("sticky", "INSERT INTO t(v) VALUES ('b')")
            assert "sticky" in [e["name"] for e in client.environments()]
            assert first.connections == 0
    assert count(live, "sticky", "b") == 1


def test_a_gateway_that_cannot_serve_passes_the_call_on(
        live: LocalDeployment, lone_gateway: str, dead_url: str):
    """The lone gateway has no controller: it answers 503 `unavailable`, the call did not run."""
    lone, live_url = lone_gateway, live.deployment.gateway_url
    with Client([dead_url, lone, live_url], live.deployment.token) as client:
        client.create_environment("passed", "sandbox", region="west")
        assert client.url == live_url
    with Client([lone, live_url], live.deployment.token) as client:
        client.sql("passed", TABLE)  # a data call: the lone gateway has no routing table
        client.sql("passed", "INSERT INTO t(v) VALUES ('x')")
        assert client.url == live_url
    assert count(live, "passed", "x") == 1
    with Client([lone, live_url], live.deployment.token) as client:
        assert client.put_file("passed", "bytes.txt", b"in hand")["size"] == 7
    with Client([lone, live_url], live.deployment.token) as client:
        # A streamed upload was consumed by the first try: it is never sent on.
        error = failure(lambda: client.put_file("passed", "stream.txt", io.BytesIO(b"s" * 10)))
        assert (error.status, error.code) == (503, "unavailable")
        assert client.url == lone
    assert live.client.get_file("passed", "bytes.txt") == b"in hand"
    assert failure(lambda: live.client.get_file("passed", "stream.txt")).code == \
        "file_not_found"
    # When no other gateway answers, the refusal is what the caller sees.
    with Client([lone, dead_url], live.deployment.token) as client:
        error = failure(client.environments)
        assert (error.status, error.code, error.retry_after) == (503, "unavailable", 1.0)


def test_when_none_answers_the_error_names_every_url(dead_urls: list[str]):
    with Client(dead_urls, "t", timeout=2) as client:
        for call in (client.regions, lambda: client.create_environment("nowhere")):
            error = failure(call)
            assert (error.status, error.code) == (0, "unreachable")
            assert f"cannot reach Tandem at {', '.join(dead_urls)} (" in error.message
            assert str(error).startswith("error unreachable: cannot reach Tandem at")


# -- unknown outcomes -----------------------------------------------------------------------

WRITES = {
    "sql": lambda c, env: c.sql(env, "INSERT INTO t(v) VALUES ('once')"),
    "file": lambda c, env: c.put_file(env, "once.txt", b"once"),
    "create": lambda c, env: c.create_environment(env + "-new", "sandbox"),
}


def applied(live: LocalDeployment, kind: str, env: str) -> bool:
    if kind == "sql":
        return count(live, env, "once") > 0
    names = [e["name"] for e in live.client.environments()]
    if kind == "create":
        return env + "-new" in names
    return any(f["path"] == "once.txt" for f in live.client.list_files(env))


@pytest.mark.parametrize("kind", sorted(WRITES))
@pytest.mark.parametrize("drop", [True, False], ids=["dropped", "silent"])
def test_a_write_of_unknown_outcome_is_sent_exactly_once(live: LocalDeployment, kind: str,
                                                         drop: bool):
    env = new_env(live, f"once-{kind}-{'d' if drop else 's'}")
    with SilentServer(drop=drop) as silent, \
            Client([silent.url, live.deployment.gateway_url], live.deployment.token,
                   timeout=1.0) as client:
        error = failure(lambda: WRITES[kind](client, env))
        assert error.status == 0
        assert error.code == ("outcome_unknown" if drop else "timeout")
        assert "may or may not have run, so it was not sent again" in error.message
        assert silent.url in error.message
        assert (silent.connections, len(silent.requests)) == (1, 1)
        assert silent.requests[0].split()[0] in ("POST", "PUT")
        assert client.url == silent.url  # nothing answered: the choice did not move
        # A read may go again: it moves on to the live gateway, which then sticks.
        assert env in [e["name"] for e in client.environments()]
        assert len(silent.requests) == 2 and silent.requests[1].startswith("GET ")
        assert client.url == live.deployment.gateway_url
    assert not applied(live, kind, env)


# -- the async client -----------------------------------------------------------------------

def test_async_client_moves_on_and_never_resends_a_write(live: LocalDeployment,
                                                         dead_url: str):
    env = new_env(live, "async-gws")
    live_url, token = live.deployment.gateway_url, live.deployment.token

    async def scenario() -> tuple[list, str, TandemError | None]:
        async with AsyncClient(f"{dead_url},{live_url}", token) as client:
            await client.sql(env, "INSERT INTO t(v) VALUES ('moved')")
            rows = (await client.sql(env, "SELECT v FROM t"))["results"][0]["rows"]
            sticky = client.url
        error = None
        async with AsyncClient([silent.url, live_url], token, timeout=1.0) as client:
            try:
                await client.sql(env, "INSERT INTO t(v) VALUES ('once')")
            except TandemError as exc:
                error = exc
        return rows, sticky, error

    with SilentServer(drop=True) as silent:
        rows, sticky, error = asyncio.run(scenario())
        assert len(silent.requests) == 1
    assert (rows, sticky) == ([["moved"]], live_url)
    assert error is not None and (error.status, error.code) == (0, "outcome_unknown")
    assert count(live, env, "once") == 0


def test_from_data_dir_knows_every_gateway(live: LocalDeployment):
    deployment = live.deployment
    expected = getattr(deployment, "gateway_urls", lambda: [deployment.gateway_url])()
    with Client.from_data_dir(live.data) as client:
        assert client.urls == expected
        assert client.url == deployment.gateway_url
        assert isinstance(client.regions(), list)
