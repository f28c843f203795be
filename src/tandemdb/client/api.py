"""Tandem's Python SDK: one method per public call (docs/api.md), sync and async.

Each API method is written once, in `Api`: it describes the call (method, path, body) and
how to read the answer, and hands that to `_call`, which `Client` runs with `httpx.Client`
and `AsyncClient` with `httpx.AsyncClient`. So the two clients cannot drift apart.

    from tandemdb.client import Client

    with Client.from_data_dir("tandem-data") as tandem:
        tandem.create_environment("acme")
        tandem.sql("acme", "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        lsn = tandem.sql("acme", "INSERT INTO t(v) VALUES (?)", ["x"])["lsn"]
        tandem.sql("acme", "SELECT v FROM t", read_region="east", min_lsn=lsn)

A client may know several gateways (`Client(["http://a:1", "http://b:2"], token)`, or one
string with commas): a call that cannot have run moves on to the next, and the client sticks
to the one that answered. **A write whose outcome is unknown is never sent twice**: when it
may have reached a gateway and no answer came, it raises at once (gateways.py says which
failures are which).

Errors raise `TandemError(status, code, message)`. Status 0 means no answer came: code
`unreachable` (or `timeout`) when no gateway could be reached, naming every URL tried, and
`outcome_unknown` (or `timeout`) for a write that was sent and may or may not have run.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import httpx

from tandemdb.common import values
from tandemdb.common.deployment import Deployment

from .errors import error_from
from .gateways import Gateways

DEFAULT_TIMEOUT = 30.0
ENDED = ("succeeded", "failed")  # operation states that do not change any more
Statements = str | Sequence[str | tuple[str, Any] | dict]


def statements_of(sql: Statements, params: Any = None) -> list[dict]:
    """`"SELECT …"` with params, or a list of SQL strings, (sql, params) pairs or dicts."""
    if isinstance(sql, str):
        return [{"sql": sql, "params": params if params is not None else []}]
    if params is not None:
        raise TypeError("params go with a single SQL string; put them in each statement")
    out = []
    for item in sql:
        if isinstance(item, str):
            out.append({"sql": item, "params": []})
        elif isinstance(item, dict):
            out.append(item)
        else:
            text, args = item
            out.append({"sql": text, "params": args if args is not None else []})
    return out


def _json(response: httpx.Response) -> Any:
    return values.loads(response.content)  # BLOBs come back as bytes


def _key(name: str) -> Callable[[httpx.Response], Any]:
    return lambda response: response.json()[name]


def _bytes(response: httpx.Response) -> bytes:
    return response.content


def _segment(text: str) -> str:
    """One path segment, quoted; '.' and '..' too, so that httpx cannot resolve them away
    and the server sees (and refuses) exactly what was asked for."""
    return text.replace(".", "%2E") if text in (".", "..") else quote(text, safe="")


def _env(name: str) -> str:
    return f"/v1/environments/{_segment(name)}"


def _file(env: str, path: str) -> str:
    return f"{_env(env)}/files/" + "/".join(_segment(s) for s in path.split("/"))


def _read_params(read_region: str | None, min_lsn: int | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if read_region is not None:
        params["read_region"] = read_region
    if min_lsn is not None:
        params["min_lsn"] = min_lsn
    return params


class Api:
    """Every public call, once; `_call` (sync or async) runs it."""

    _gateways: Gateways

    def __init__(self, urls: str | Sequence[str], token: str, **options: Any) -> None:
        raise NotImplementedError  # Client and AsyncClient: each opens its own httpx client

    @property
    def url(self) -> str:
        """The gateway the next call goes to first: the last one that answered."""
        return self._gateways.url

    @property
    def urls(self) -> list[str]:
        """Every gateway URL this client knows, in the order given."""
        return list(self._gateways.urls)

    def _call(self, method: str, path: str, parse: Callable[[httpx.Response], Any] = _json,
              **request: Any) -> Any:
        raise NotImplementedError

    @classmethod
    def from_data_dir(cls, data: Path | str = "tandem-data", **options: Any):
        """A client for the local deployment in `data`: every gateway URL, the admin token."""
        deployment = Deployment.load(Path(data))
        urls = getattr(deployment, "gateway_urls", lambda: [deployment.gateway_url])()
        return cls(urls, deployment.token, **options)

    # --- control plane

    def control_plane(self) -> dict:
        """The controllers (which one leads, since when, its lease), the store's members and
        the gateways: `GET /v1/control-plane`."""
        return self._call("GET", "/v1/control-plane")

    def regions(self) -> list[dict]:
        """Regions with their pair, state and nodes (`name, url, healthy, …`)."""
        return self._call("GET", "/v1/regions", _key("regions"))

    def nodes(self) -> list[dict]:
        """Every node: `name, region, url, state` (healthy, down …), the `primaries` and
        `secondaries` the catalog places on it, `last_heartbeat_age`."""
        return self._call("GET", "/v1/nodes", _key("nodes"))

    def drain_node(self, node: str, parallelism: int | None = None) -> dict:
        """Drain a node for maintenance (docs/ha.md, "Drain"); answers the operation
        (`node.drain`). Its primaries move to their local secondaries (zero loss), its
        secondaries to other nodes of its region, and it is left `cordoned`."""
        body: dict[str, Any] = {}
        if parallelism is not None:
            body["parallelism"] = parallelism
        return self._call("POST", f"/v1/nodes/{_segment(node)}/drain", json=body)

    def uncordon_node(self, node: str) -> dict:
        """Make a drained node placeable again: `{"node", "was"}` (its state before)."""
        return self._call("POST", f"/v1/nodes/{_segment(node)}/uncordon")

    def create_environment(self, name: str, type: str = "production",
                           region: str | None = None,
                           rpo_limit_seconds: float | None = None) -> dict:
        """Create an environment; answers its view (type, regions, epoch, replicas …)."""
        body: dict[str, Any] = {"name": name, "type": type}
        if region is not None:
            body["region"] = region
        if rpo_limit_seconds is not None:
            body["rpo_limit_seconds"] = rpo_limit_seconds
        return self._call("POST", "/v1/environments", json=body)

    def environments(self) -> list[dict]:
        return self._call("GET", "/v1/environments", _key("environments"))

    def environment(self, name: str) -> dict:
        return self._call("GET", _env(name))

    def delete_environment(self, name: str) -> dict:
        return self._call("DELETE", _env(name))

    def reseed(self, env: str, region: str) -> dict:
        """Copy the secondary of `env` in `region` afresh from a snapshot of its primary:
        what ends a halted stream. Answers at once (202); the environment's answer shows
        the replica `seeding`, then `streaming`."""
        return self._call("POST", f"{_env(env)}/replicas/{_segment(region)}/reseed")

    # --- operations, events, webhooks (docs/operations.md)

    def operation(self, op_id: str, wait: float = 0) -> dict:
        """One operation: kind, target, state, steps with their times, result.

        With `wait` the answer comes once it has ended (succeeded or failed), or after
        `wait` seconds (at most 60) with its state then: ask again until it has ended."""
        params = {"wait": wait} if wait else None
        return self._call("GET", f"/v1/operations/{_segment(op_id)}", params=params)

    def operations(self, limit: int = 20, parent: str | None = None) -> list[dict]:
        """The newest operations first; `parent` keeps those a region operation started."""
        params: dict[str, Any] = {"limit": limit}
        if parent is not None:
            params["parent"] = parent
        return self._call("GET", "/v1/operations", _key("operations"), params=params)

    def lost(self, env: str) -> dict:
        """The writes a forced failover lost, kept when the old primary rejoined:
        `{"environment", "bundles": [{"fork_lsn", "epoch", "entries": [{"lsn",
        "committed_at", "tables", "changes": [{"table", "op", "before", "after"}]}]}]}`."""
        return self._call("GET", _env(env) + "/lost")

    def replay_lost(self, env: str) -> dict:
        """Apply the lost writes that conflict with nothing written since the fork:
        `{"applied": [lsn], "already": [lsn], "conflicts": [{"lsn", "table", "op", "key",
        "reason"}]}`. Running it again applies nothing twice."""
        return self._call("POST", _env(env) + "/lost/replay")

    # --- failover (docs/failover.md): each answers the operation at once (202)

    def failover(self, env: str, mode: str = "planned",
                 catch_up_timeout: float | None = None, to: str | None = None) -> dict:
        """Move the environment's primary to its other region; answers the operation.

        `catch_up_timeout`: seconds the secondary has to reach the final lsn (default 10);
        past it the failover fails and the old primary takes writes again. `to`: the node
        of the secondary to promote (planned only; e.g. its local secondary, to switch
        over within the region)."""
        body: dict[str, Any] = {"mode": mode}
        if catch_up_timeout is not None:
            body["catch_up_timeout"] = catch_up_timeout
        if to is not None:
            body["to"] = to
        return self._call("POST", _env(env) + "/failover", json=body)

    def region_failover(self, region: str, mode: str = "planned",
                        parallelism: int | None = None) -> dict:
        """Move every production primary out of `region`; answers the operation."""
        body: dict[str, Any] = {"mode": mode}
        if parallelism is not None:
            body["parallelism"] = parallelism
        return self._call("POST", f"/v1/regions/{_segment(region)}/failover", json=body)

    def region_failback(self, region: str, parallelism: int | None = None) -> dict:
        """Move every environment whose home is `region` back home; answers the operation."""
        body: dict[str, Any] = {}
        if parallelism is not None:
            body["parallelism"] = parallelism
        return self._call("POST", f"/v1/regions/{_segment(region)}/failback", json=body)

    def events(self, after: int = 0, wait: float = 0) -> dict:
        """Events newer than `after` (`{"events": [...], "last": N}`); waits up to `wait` s."""
        return self._call("GET", "/v1/events", params={"after": after, "wait": wait})

    def create_webhook(self, url: str, secret: str,
                       environments: list[str] | None = None) -> dict:
        body = {"url": url, "secret": secret, "environments": environments}
        return self._call("POST", "/v1/webhooks", json=body)

    def webhooks(self) -> list[dict]:
        return self._call("GET", "/v1/webhooks", _key("webhooks"))

    def delete_webhook(self, webhook_id: str) -> dict:
        return self._call("DELETE", f"/v1/webhooks/{_segment(webhook_id)}")

    # --- data plane

    def sql(self, env: str, sql: Statements, params: Any = None, *,
            read_region: str | None = None, min_lsn: int | None = None) -> dict:
        """Run statements as one transaction; answers `{results, lsn, epoch, region}`.

        `read_region` reads from that region's replica; `min_lsn` waits there until that
        lsn is applied (read-your-writes).
        """
        body: dict[str, Any] = {"statements": statements_of(sql, params)}
        if read_region is not None:
            body["read_region"] = read_region
        if min_lsn is not None:
            body["min_lsn"] = min_lsn
        return self._call("POST", f"{_env(env)}/sql", content=values.dumps(body),
                          headers={"content-type": "application/json"})

    def put_file(self, env: str, path: str, data: bytes | str | Iterable[bytes],
                 size: int | None = None) -> dict:
        """Store a file; `data` is bytes, text, a binary file or an iterator of chunks."""
        if isinstance(data, str):
            data = data.encode()
        headers = {"content-type": "application/octet-stream"}
        if size is not None:
            headers["content-length"] = str(size)
        return self._call("PUT", _file(env, path), content=data, headers=headers)

    def get_file(self, env: str, path: str, read_region: str | None = None,
                 min_lsn: int | None = None) -> bytes:
        """A file's content; `read_region` and `min_lsn` work as for `sql`."""
        return self._call("GET", _file(env, path), _bytes,
                          params=_read_params(read_region, min_lsn))

    def delete_file(self, env: str, path: str) -> dict:
        return self._call("DELETE", _file(env, path))

    def list_files(self, env: str, prefix: str = "", read_region: str | None = None,
                   min_lsn: int | None = None) -> list[dict]:
        """Files under `prefix`: `[{path, hash, size, modified_at}]`."""
        params = {"prefix": prefix, **_read_params(read_region, min_lsn)}
        return self._call("GET", f"{_env(env)}/files", _key("files"), params=params)

    def checksum(self, env: str, region: str | None = None) -> dict:
        """Logical checksum of the replica in `region` (default: the primary), plus its lsn."""
        params = {"region": region} if region else None
        return self._call("GET", f"{_env(env)}/checksum", params=params)


def _headers(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}", "user-agent": "tandemdb-client"}


def _in_hand(request: dict[str, Any]) -> bool:
    """The body can be sent again (not a file or an iterator a first try consumed)."""
    content = request.get("content")
    return content is None or isinstance(content, bytes | str)


def _answer(response: httpx.Response, parse: Callable[[httpx.Response], Any]) -> Any:
    if response.is_error:
        raise error_from(response)
    return parse(response)


class Client(Api):
    """Blocking client. Use as a context manager, or call `close()`."""

    def __init__(self, urls: str | Sequence[str], token: str,
                 timeout: float = DEFAULT_TIMEOUT,
                 transport: httpx.BaseTransport | None = None) -> None:
        self._gateways = Gateways(urls)
        self._http = httpx.Client(base_url=self.url, headers=_headers(token), timeout=timeout,
                                  transport=transport)

    def _call(self, method: str, path: str, parse: Callable[[httpx.Response], Any] = _json,
              **request: Any) -> Any:
        walk = self._gateways.walk(method, path, _in_hand(request))
        for url in walk:
            try:
                response = self._http.request(method, url + path, **request)
            except httpx.TransportError as exc:
                walk.failed(url, exc)  # raises for a write that may have run
                continue
            if not walk.moves_on(response):
                return _answer(response, parse)
        raise walk.give_up()

    def wait_operation(self, op_id: str, timeout: float = 600.0,
                       progress: Callable[[dict], None] | None = None) -> dict:
        """Follow an operation until it ends; `progress` sees each state on the way."""
        deadline = time.monotonic() + timeout
        while True:
            op = self.operation(op_id, wait=min(10.0, max(0.1, deadline - time.monotonic())))
            if progress is not None:
                progress(op)
            if op["state"] in ENDED or time.monotonic() >= deadline:
                return op

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class AsyncClient(Api):
    """The same calls, awaitable. Use `async with`, or call `await aclose()`.

    `put_file` takes bytes, text or an async iterator of chunks here.
    """

    def __init__(self, urls: str | Sequence[str], token: str,
                 timeout: float = DEFAULT_TIMEOUT,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._gateways = Gateways(urls)
        self._http = httpx.AsyncClient(base_url=self.url, headers=_headers(token),
                                       timeout=timeout, transport=transport)

    async def _call(self, method: str, path: str,
                    parse: Callable[[httpx.Response], Any] = _json, **request: Any) -> Any:
        walk = self._gateways.walk(method, path, _in_hand(request))
        for url in walk:
            try:
                response = await self._http.request(method, url + path, **request)
            except httpx.TransportError as exc:
                walk.failed(url, exc)  # raises for a write that may have run
                continue
            if not walk.moves_on(response):
                return _answer(response, parse)
        raise walk.give_up()

    async def wait_operation(self, op_id: str,
                             timeout: float = 600.0) -> dict:  # noqa: ASYNC109 - public API
        """Follow an operation until it ends (or `timeout`); answers its last record."""
        deadline = time.monotonic() + timeout
        while True:
            # Api's methods answer what `_call` does: here the awaitable of the record.
            wait = min(10.0, max(0.1, deadline - time.monotonic()))
            op = await cast(Awaitable[dict], self.operation(op_id, wait=wait))
            if op["state"] in ENDED or time.monotonic() >= deadline:
                return op

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()
