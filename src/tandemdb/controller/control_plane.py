"""`GET /v1/control-plane`: the controllers, who leads, the etcd members, the gateways.

Any controller answers it itself (a follower does not forward it), so it also answers when
nobody leads: that is when an operator needs it most. It asks every controller's and
gateway's `/healthz` and the store's members, all at once and each within `PROBE_SECONDS`,
so one lost site costs the answer a second at most, not a hang.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from fastapi import Depends, FastAPI, Request

from tandemdb.common.deployment import Deployment
from tandemdb.common.http import check_secret
from tandemdb.common.leader_watch import probe_health

from .leader import Leadership
from .store import Store

PROBE_SECONDS = 1.0


def own_health(leadership: Leadership, site: str | None) -> dict:
    """What this controller says of itself in `/healthz`: its site and its leadership."""
    return {"site": site, "leading": leadership.leading, "elected": leadership.elected,
            "leader": (leadership.leader or {}).get("name"),
            "since": (leadership.leader or {}).get("since") if leadership.elected else None,
            "lease_remaining_seconds": _rounded(leadership.remaining()),
            "problem": leadership.problem}


async def view(deployment: Deployment, store: Store, leadership: Leadership) -> dict:
    controllers, gateways = deployment.controller_specs(), deployment.gateway_specs()
    async with httpx.AsyncClient(timeout=PROBE_SECONDS) as http:
        probes = [probe_health(http, deployment.url(name)) for name in (*controllers, *gateways)]
        members, *answers = await asyncio.gather(_members(store), *probes)
    healths: dict[str, dict] = dict(zip([*controllers, *gateways], answers, strict=True))
    leader = next((h for h in healths.values() if h.get("leading")), None)
    rows = [{"name": name, "site": spec.get("site"), "url": deployment.url(name),
             "reachable": bool(healths[name]), "leading": bool(healths[name].get("leading")),
             "problem": healths[name].get("problem")} for name, spec in controllers.items()]
    healthy = sum(1 for m in members if m.get("healthy"))
    store_view: dict[str, Any] = {"kind": deployment.store.get("kind", "sqlite")}
    if members:
        store_view |= {"members": members, "quorum": healthy > len(members) // 2}
    problem = None if leader else (leadership.problem or "no controller leads now")
    return {
        "answered_by": leadership.name,
        "leader": None if leader is None else {
            "name": leader["name"], "site": leader.get("site"), "since": leader.get("since"),
            "lease_remaining_seconds": leader.get("lease_remaining_seconds")},
        "problem": problem,
        "controllers": rows,
        "store": store_view,
        "gateways": [{"name": name, "region": spec.get("region"), "url": deployment.url(name),
                      "reachable": bool(healths[name])} for name, spec in gateways.items()],
    }


async def _members(store: Store) -> Any:
    members = getattr(store, "members", None)
    if members is None:
        return []
    started = time.monotonic()
    try:
        return await asyncio.wait_for(asyncio.to_thread(members), 4 * PROBE_SECONDS)
    except TimeoutError:
        return [{"name": None, "healthy": False,
                 "error": f"no answer in {time.monotonic() - started:.1f} s"}]


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def install_routes(app: FastAPI, deployment: Deployment, store: Store,
                   leadership: Leadership) -> None:
    def require_secret(request: Request) -> None:
        check_secret(request, deployment.secret)

    @app.get("/healthz")
    async def healthz() -> dict:
        site = deployment.site_of(leadership.name)
        return {"ok": True, "component": "controller", "name": leadership.name,
                **own_health(leadership, site)}

    @app.get("/v1/control-plane", dependencies=[Depends(require_secret)])
    async def control_plane() -> dict:
        return await view(deployment, store, leadership)
