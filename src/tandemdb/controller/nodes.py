"""Admin calls from the controller to nodes: put and drop one replica.

A call that fails is not an error of the request that caused it: heartbeat reconciliation
repairs it when the node is back. So these calls never raise; they return an `Outcome`
whose `problem` says, in words, what went wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from tandemdb.common.http import SECRET_HEADER

TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class Outcome:
    node: str
    problem: str | None = None  # None: the node did it

    @property
    def ok(self) -> bool:
        return self.problem is None


class NodeClient:
    def __init__(self, secret: str, timeout: float = TIMEOUT_SECONDS) -> None:
        self._client = httpx.AsyncClient(headers={SECRET_HEADER: secret},
                                         timeout=httpx.Timeout(timeout))

    async def put_replica(self, node: str, url: str, desired: dict) -> Outcome:
        return await self._call(node, "PUT", f"{url}/internal/v1/replicas/{desired['env']}",
                                desired)

    async def delete_replica(self, node: str, url: str, env: str) -> Outcome:
        return await self._call(node, "DELETE", f"{url}/internal/v1/replicas/{env}", None)

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
            return Outcome(node)
        return Outcome(node, f"{node} answered {response.status_code} to {method} {url}: "
                             f"{response.text[:300]}")
