"""Admin calls from the controller to nodes: put and drop one replica, and the failover
calls (fence, wait, promote, unfence; docs/failover.md).

A put or drop that fails is not an error of the request that caused it: heartbeat
reconciliation repairs it when the node is back. So these calls never raise; they return
an `Outcome` whose `problem` says, in words, what went wrong. A failover call answers a
`Reply`: the node's answer (status and JSON body), or `status` 0 when none came.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx

from tandemdb.common.http import KEEPALIVE_SECONDS, SECRET_HEADER

TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class Outcome:
    node: str
    problem: str | None = None  # None: the node did it
    body: dict = field(default_factory=dict)  # the node's JSON answer, when it did

    @property
    def ok(self) -> bool:
        return self.problem is None


@dataclass(frozen=True)
class Reply:
    node: str
    status: int  # 0: no answer (unreachable, timed out)
    body: dict
    problem: str | None = None  # None when the node answered 2xx

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def code(self) -> str | None:
        """The node's error code (`lsn_mismatch`, `stale_epoch` …), if it refused."""
        error = self.body.get("error")
        return error.get("code") if isinstance(error, dict) else None


class NodeClient:
    def __init__(self, secret: str, timeout: float = TIMEOUT_SECONDS) -> None:
        self._client = httpx.AsyncClient(
            headers={SECRET_HEADER: secret}, timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(keepalive_expiry=KEEPALIVE_SECONDS))

    async def put_replica(self, node: str, url: str, desired: dict) -> Outcome:
        """PUT the desired record; the answer's body is the replica as the node has it."""
        return await self._call(node, "PUT", f"{url}/internal/v1/replicas/{desired['env']}",
                                desired)

    async def delete_replica(self, node: str, url: str, env: str) -> Outcome:
        return await self._call(node, "DELETE", f"{url}/internal/v1/replicas/{env}", None)

    async def replica_call(self, node: str, url: str, env: str, action: str, body: dict,
                           seconds: float = TIMEOUT_SECONDS) -> Reply:
        """POST `/internal/v1/replicas/{env}/{action}` (fence, wait, promote, unfence)."""
        return await self._post(node, url, f"/internal/v1/replicas/{env}/{action}", body,
                                action, seconds)

    async def _post(self, node: str, url: str, path: str, body: dict, action: str,
                    seconds: float) -> Reply:
        """POST with a time limit of `seconds` (httpx's own, so a call never hangs)."""
        try:
            response = await self._client.post(url + path, json=body,
                                                timeout=httpx.Timeout(seconds))
        except httpx.HTTPError as exc:
            return Reply(node, 0, {}, f"could not reach {node} at {url} "
                                      f"({type(exc).__name__}: {exc or 'no detail'})")
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        answer = answer if isinstance(answer, dict) else {}
        if response.is_success:
            return Reply(node, response.status_code, answer)
        error = answer["error"] if isinstance(answer.get("error"), dict) else {}
        return Reply(node, response.status_code, answer,
                     f"{node} refused {action} with {response.status_code} "
                     f"{error.get('code', '')}: {error.get('message') or response.text[:300]}")

    async def sql(self, node: str, url: str, env: str, statements: list[dict],
                  seconds: float = TIMEOUT_SECONDS * 5) -> Reply:
        """One transaction on the node's data API (the replay of lost writes)."""
        return await self._post(node, url, f"/v1/environments/{env}/sql",
                                {"statements": statements}, "sql", seconds)

    async def close(self) -> None:
        await self._client.aclose()

    async def _call(self, node: str, method: str, url: str, body: dict | None) -> Outcome:
        try:
            response = await self._client.request(method, url, json=body)
        except httpx.HTTPError as exc:
            return Outcome(node, f"could not reach {node} at {url} "
                                 f"({type(exc).__name__}: {exc or 'no detail'})")
        if response.status_code == 404 and method == "DELETE":
            return Outcome(node)  # already gone: what we wanted
        if response.is_success:
            try:
                answer = response.json()
            except ValueError:
                answer = {}
            return Outcome(node, body=answer if isinstance(answer, dict) else {})
        return Outcome(node, f"{node} answered {response.status_code} to {method} {url}: "
                             f"{response.text[:300]}")
