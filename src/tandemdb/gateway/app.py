"""The gateway: the one endpoint users talk to (docs/api.md, docs/architecture.md).

Every `/v1` call needs the admin token. Data calls (SQL, files) go to the node holding the
environment's primary, or with `read_region` to its replica in that region; the routing
table in memory says where, so routing costs no controller call. Control calls go to the
controller. Answers pass through unchanged.

With several controllers (one per site; docs/deploy.md) the gateway knows them all, its own
region's first, and sticks to one. A control call moves on to the next only when it cannot
have run where it went: no connection could be made, or that controller answered 503
`no_leader`, `unavailable` or `shutting_down`. A write that was sent and got no answer is
never sent again (502/504 `outcome_unknown`, gateway/proxy.py). The routing watch moves on
the same way (routing.py).

While an environment fails over, the routing table marks it `switching` and the gateway
holds calls to its primary until the failover ends (up to `hold_timeout`, 10 s; then 503
`switching` with `Retry-After`, and the call did not run). A write that meets a primary that
refuses it as moved (`fenced`, `not_primary`: sent before the gateway saw the failover) is
held the same way and sent once more to the primary named after the failover: a request
whose body the gateway still holds is resent, a streamed upload is not. Neither can run
twice: the refusing node ran nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import time
from contextlib import asynccontextmanager
from urllib.parse import quote, urlencode

from fastapi import FastAPI, Request
from starlette.responses import JSONResponse, Response

from tandemdb.common import process
from tandemdb.common.controllers import Controllers
from tandemdb.common.deployment import Deployment
from tandemdb.common.http import (
    ApiError,
    BodyLimit,
    check_token,
    install_error_handlers,
    parse_json,
)
from tandemdb.common.leader_watch import LeaderWatch
from tandemdb.common.metrics import install_metrics
from tandemdb.common.paths import normalise_path, normalise_prefix
from tandemdb.common.shutdown import serve

from .proxy import Answer, Proxy, Unreachable, buffered, error_code, streamed
from .routing import RoutingTable, RoutingWatch, Target

log = logging.getLogger("tandem.gateway")

LOAD_WAIT_SECONDS = 2.0  # a data call waits this long for the first routing answer
HOLD_SECONDS = 10.0  # hold_timeout: a call to a moving primary waits this long, then 503
CATALOG_WAIT_SECONDS = 2.0  # create/delete answers wait for the routing table to follow
HOLD_CODES = {"not_primary", "fenced"}  # node answers that mean "the primary moved"
PATH_SAFE = "/:@!$&'()*+,;="
DATA_PATH = re.compile(r"^/v1/environments/[^/]*/(sql|files|checksum)(/|$)")
# A controller's 503 answers that say the call did not run there: no leader (etcd quorum
# lost), the leader out of its reach, or it is stopping. Another controller may serve it.
MOVE_ON_CODES = frozenset({"no_leader", "unavailable", "shutting_down"})


class Gateway:
    """The gateway's routing decisions and forwards; the routes below are thin wrappers."""

    def __init__(self, deployment: Deployment, table: RoutingTable, proxy: Proxy,
                 name: str) -> None:
        self.deployment, self.table, self.proxy, self.name = deployment, table, proxy, name
        self.region = deployment.site_of(name)
        self.controllers = Controllers(deployment.controller_links(name), "control calls", log)
        self.load_wait, self.hold = LOAD_WAIT_SECONDS, HOLD_SECONDS
        self.catalog_wait = CATALOG_WAIT_SECONDS

    def authorize(self, request: Request) -> None:
        check_token(request, self.deployment.token)

    # --- data plane -------------------------------------------------------------------

    async def route(self, env: str, read_region: str | None, deadline: float) -> Target:
        """The replica for a call; a call to the primary of an environment that is failing
        over waits (until `deadline`) for the failover to end."""
        if not self.table.loaded and not await self.table.wait_loaded(self.load_wait):
            raise ApiError(503, "unavailable",
                           "the gateway has no routing table yet: it cannot reach the "
                           f"controller at {self.controllers}; retry shortly",
                           {"Retry-After": "1"})
        route = self.table.routes.get(env)
        if route is not None and route.switching and read_region in (None,
                                                                     route.primary_region):
            await self.wait_released(env, lambda r: not r.switching, deadline)
        return self.table.lookup(env, read_region)

    async def wait_released(self, env: str, done, deadline: float) -> None:
        """Hold until `done(route)` (or the environment is gone); 503 at the deadline."""
        def ready(table: RoutingTable) -> bool:
            route = table.routes.get(env)
            return route is None or done(route)

        if await self.table.wait_until(ready, max(0.0, deadline - time.monotonic())):
            return
        route = self.table.routes.get(env)
        operation = route.operation if route is not None else None
        raise ApiError(503, "switching", f"environment {env!r} is failing over (operation "
                       f"{operation}) and the call was held for {self.hold:g} s, the hold "
                       "timeout; it did not run: retry it", {"Retry-After": "1"})

    async def forward_data(self, request: Request, env: str, path: str, *,
                           read_region: str | None = None, query: str = "",
                           content: bytes | None = None, stream_in: bool = False,
                           stream_out: bool = False) -> Response:
        """Send one data call to its replica; hold and resend once if the primary moved."""
        started = time.monotonic()
        deadline = started + self.hold
        target = await self.route(env, read_region, deadline)
        headers = self.proxy.headers_from(request, streamed=stream_in)
        body = request.stream() if stream_in else content
        # Only a call to the primary whose body is still in hand may be sent a second time.
        may_resend = read_region is None and not stream_in
        for attempt in (1, 2):
            route = self.table.routes.get(env)
            sent_with = route.operation if route is not None else None
            url = f"{target.url}{path}?{query}" if query else f"{target.url}{path}"
            try:
                answer = await self.proxy.send(request.method, url, headers, body,
                                               stream=stream_out)
            except Unreachable as exc:
                if attempt == 1 and may_resend:
                    moved = await self.await_new_primary(env, target, sent_with, deadline)
                    if moved is not None:
                        target = moved
                        continue
                raise ApiError(503, "unavailable",
                               f"node {target.node} ({target.region}) serving {env!r} cannot "
                               f"be reached ({exc}); retry shortly",
                               {"Retry-After": "1"}) from exc
            if (attempt == 1 and may_resend and not stream_out
                    and answer.status_code in (409, 503) and error_code(answer) in HOLD_CODES):
                moved = await self.await_new_primary(env, target, sent_with, deadline)
                if moved is not None:
                    target = moved
                    continue
            if attempt == 2 or time.monotonic() - started > 0.05:
                log.info("held %s %s for %.3f s: primary of %s in %s (epoch %d)",
                         request.method, path, time.monotonic() - started, env,
                         target.region, target.epoch)
            return streamed(answer) if stream_out else buffered(answer)
        raise AssertionError("unreachable: the loop returns or raises")

    async def await_new_primary(self, env: str, old: Target, sent_with: str | None,
                                deadline: float) -> Target | None:
        """After the primary refused a call as moved: wait until a failover has ended
        since the call was sent, and answer the primary then (None: no new route)."""
        def settled(route) -> bool:
            new = route.primary
            return (not route.switching and new is not None and bool(new.url)
                    and (new != old or route.operation != sent_with))

        try:
            await self.wait_released(env, settled, deadline)
        except ApiError:
            route = self.table.routes.get(env)
            if route is not None and route.switching:
                raise
            return None  # nothing moved: the node's own answer goes back
        route = self.table.routes.get(env)
        return route.primary if route is not None else None

    # --- control plane ----------------------------------------------------------------

    async def forward_control(self, request: Request) -> Response:
        """Send a control call to a controller, unchanged; answer what it answers."""
        path = request.scope["path"]
        if "\x00" in path or any(seg in (".", "..") for seg in path.split("/")):
            raise ApiError(400, "bad_request", f"path {path!r} has '.' or '..' segments")
        target = quote(path, safe=PATH_SAFE)
        query = request.scope.get("query_string", b"")
        if query:
            target += "?" + query.decode("latin-1")
        body = await request.body() if request.method in ("POST", "PUT", "PATCH") else None
        answer = await self.send_control(request.method, target,
                                         self.proxy.headers_from(request), body)
        await self.follow_catalog(request.method, path, answer.status_code, answer.content)
        return buffered(answer)

    async def send_control(self, method: str, target: str, headers: list[tuple[str, str]],
                           body: bytes | None) -> Answer:
        """Try the controllers in turn, the current one first, while the call cannot have
        run where it went; the first other answer is the call's. A failure after the call
        may have run (the proxy's 502/504 `outcome_unknown`) is raised at once."""
        tried: list[str] = []  # "url (what happened)", for the error naming them all
        refusal: Answer | None = None  # the last controller's own "cannot serve now"
        for url in self.controllers.in_turn():
            try:
                answer = await self.proxy.send(method, url + target, headers, body,
                                               upstream="controller")
            except Unreachable as exc:
                why = str(exc)
            except ApiError as exc:  # the proxy's own answer for a call that broke
                # `unavailable`: it did not run, or it is a read. Anything else may have
                # run there: never sent again. With one controller, the answer is as ever.
                if exc.code != "unavailable" or len(self.controllers.urls) == 1:
                    raise
                why = exc.message
            else:
                code = error_code(answer) if answer.status_code == 503 else ""
                if code not in MOVE_ON_CODES:
                    self.controllers.answered(url)
                    return answer
                refusal, why = answer, f"HTTP 503 {code}"
            tried.append(f"{url} ({why})")
            self.controllers.move_on(url, why)
        if refusal is not None:
            return refusal  # the controllers' own words (say, no leader: etcd lost quorum)
        where = f"the controller at {tried[0]}" if len(tried) == 1 else \
            f"any controller: {'; '.join(tried)}"
        raise ApiError(503, "unavailable", f"cannot reach {where}; retry shortly",
                       {"Retry-After": "1"})

    async def follow_catalog(self, method: str, path: str, status: int, body: bytes) -> None:
        """After a create or delete, wait until routing agrees, so the next call finds it."""
        if not 200 <= status < 300:
            return
        parts = path.strip("/").split("/")  # v1 environments [env]
        if method == "POST" and parts == ["v1", "environments"]:
            try:
                name = json.loads(body)["name"]
            except (ValueError, KeyError, TypeError):
                return
            present = True
        elif method == "DELETE" and len(parts) == 3 and parts[:2] == ["v1", "environments"]:
            name, present = parts[2], False
        else:
            return
        if not await self.table.wait_until(lambda t: (name in t) == present,
                                           self.catalog_wait):
            log.warning("routing: %s of %s not seen in routing after %.1f s; answering anyway",
                        "creation" if present else "deletion", name, self.catalog_wait)


def query_without(request: Request, name: str) -> tuple[str | None, str]:
    """Take one parameter out of the query string; the rest is forwarded as it came."""
    raw = request.scope.get("query_string", b"").decode("latin-1")
    if name.encode() not in request.scope.get("query_string", b""):
        return None, raw
    value = request.query_params.get(name)
    rest = [(k, v) for k, v in request.query_params.multi_items() if k != name]
    return value, urlencode(rest)


def sql_read_region(body: bytes) -> tuple[str | None, bytes]:
    """Find `read_region` in a SQL body; the body is re-encoded only when it has one."""
    if b'"read_region"' not in body:  # the common case: forward the bytes untouched
        return None, body
    doc = parse_json(body, tagged=False)  # 400 when not JSON or nested too deep
    if not isinstance(doc, dict) or "read_region" not in doc:
        return None, body
    region = doc.pop("read_region")
    if region is not None and not isinstance(region, str):
        raise ApiError(400, "bad_request", "read_region must be a region name (a string)")
    return region, json.dumps(doc).encode()


def create_app(deployment: Deployment, table: RoutingTable | None = None,
               watch: bool = True, name: str | None = None) -> FastAPI:
    """The app of gateway `name` (the deployment's first by default). `watch=False`
    (tests) leaves the routing table to the caller."""
    gateways = deployment.gateway_specs()
    name = name if name is not None else next(iter(gateways))
    if name not in gateways:
        raise ValueError(f"no gateway {name!r} in the deployment (gateways: "
                         f"{', '.join(gateways)})")
    table = table if table is not None else RoutingTable(list(deployment.regions))
    links = deployment.controller_links(name)
    proxy = Proxy(deployment.secret, upstreams=len(deployment.nodes) + len(links))
    watcher = RoutingWatch(table, Controllers(links, "routing polls", log),
                           deployment.secret) if watch else None
    gateway = Gateway(deployment, table, proxy, name)
    steering = LeaderWatch([gateway.controllers, *([watcher.controllers] if watcher else [])])

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        if watcher is not None:
            watcher.start()
        steering.start()
        yield
        await steering.stop()
        if watcher is not None:
            await watcher.stop()
        await proxy.close()

    app = FastAPI(title="Tandem gateway", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.gateway = gateway
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=deployment.max_body_bytes)
    # Outermost, so refused requests are counted too.
    install_metrics(app, deployment.token, deployment.secret)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        age = time.monotonic() - table.updated_at if table.loaded else None
        return JSONResponse({"ok": True, "component": "gateway", "name": gateway.name,
                             "region": gateway.region,
                             "routing": {"loaded": table.loaded, "revision": table.revision,
                                         "environments": len(table.routes),
                                         "age_seconds": age}})

    @app.post("/v1/environments/{env}/sql")
    async def sql(request: Request, env: str) -> Response:
        gateway.authorize(request)
        region, body = sql_read_region(await request.body())
        return await gateway.forward_data(request, env, f"/v1/environments/{env}/sql",
                                          read_region=region, content=body)

    @app.get("/v1/environments/{env}/files")
    async def list_files(request: Request, env: str) -> Response:
        gateway.authorize(request)
        region, query = query_without(request, "read_region")
        normalise_prefix(request.query_params.get("prefix", ""))  # 400 before any forward
        return await gateway.forward_data(request, env, f"/v1/environments/{env}/files",
                                          read_region=region, query=query)

    @app.api_route("/v1/environments/{env}/files/{path:path}", methods=["GET", "PUT", "DELETE"])
    async def file(request: Request, env: str, path: str) -> Response:
        gateway.authorize(request)
        node_path = f"/v1/environments/{env}/files/{quote(normalise_path(path), safe=PATH_SAFE)}"
        if request.method == "GET":
            region, query = query_without(request, "read_region")
            return await gateway.forward_data(request, env, node_path, read_region=region,
                                              query=query, stream_out=True)
        return await gateway.forward_data(request, env, node_path,
                                          stream_in=request.method == "PUT")

    @app.get("/v1/environments/{env}/checksum")
    async def checksum(request: Request, env: str) -> Response:
        gateway.authorize(request)
        return await gateway.forward_data(request, env, f"/internal/v1/replicas/{env}/checksum",
                                          read_region=request.query_params.get("region"))

    @app.get("/v1/regions")
    @app.get("/v1/environments")
    @app.post("/v1/environments")
    @app.get("/v1/environments/{env}")
    @app.delete("/v1/environments/{env}")
    async def control(request: Request) -> Response:
        gateway.authorize(request)
        return await gateway.forward_control(request)

    # Every other /v1 call (operations, events, failover …) is the controller's business.
    @app.api_route("/v1/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def control_other(request: Request) -> Response:
        gateway.authorize(request)
        if DATA_PATH.match(request.scope["path"]):
            raise ApiError(405, "method_not_allowed",
                           f"{request.method} is not allowed on {request.scope['path']}")
        return await gateway.forward_control(request)

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tandemdb.gateway",
                                     description="Tandem gateway: the public endpoint.")
    process.add_arguments(parser)
    parser.add_argument("--log-level", default="info", help="debug, info, warning …")
    parser.add_argument("--access-log", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # else one line per forward
    deployment, name = process.identify(parser, args, "gateway")
    host, port = deployment.address(name)
    log.info("%s on %s:%d, controllers %s, %d nodes", name, host, port,
             ", ".join(deployment.controller_links(name)), len(deployment.nodes))
    # Forwarded long polls (events, an operation's end) get 503 as soon as the stop begins.
    serve(create_app(deployment, name=name), name, host=host, port=port,
          workers=1, log_config=None, access_log=args.access_log, server_header=False)
