"""The fault proxy process: its links, and the control API that sets their faults.

`python -m tandemdb.faultproxy --data DIR` listens on every link of `deployment.json`'s
`fault_proxy` and serves, on its control port:

- `GET /healthz`;
- `GET /v1/links`: each link with its fault and counters;
- `POST /v1/links` `{"links": [names] | "region": R, "mode": "ok"|"cut"|"drop",
  "delay": s}`: set the fault of those links (all of them when neither is given).

Both `/v1` paths need the cluster secret. A restarted proxy cuts again the regions and
nodes that `tandem region|node outage NAME --partition` staged (`outage.json`), so a
partition outlives it.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
from contextlib import asynccontextmanager
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tandemdb.common.deployment import HOST, Deployment
from tandemdb.common.http import ApiError, check_secret, install_error_handlers, read_json
from tandemdb.common.outages import PARTITION, staged_outages

from .link import Fault, Link, Mode

log = logging.getLogger("tandem.faultproxy")


class FaultProxy:
    def __init__(self, deployment: Deployment) -> None:
        if not deployment.fault_proxy:
            raise ValueError("deployment.json has no fault_proxy: start the deployment with "
                             "'tandem up --fault-proxy'")
        self.deployment = deployment
        self.port: int = deployment.fault_proxy["port"]  # its control API
        self.links = {name: Link(name, port, self._target_port(name))
                      for name, port in deployment.links().items()}

    def _target_port(self, name: str) -> int:
        dst = name.split(">", 1)[1]
        return int(self.deployment.direct_url(dst).rsplit(":", 1)[1])

    async def start(self) -> None:
        for link in self.links.values():
            await link.start()
        for name, kind in staged_outages(Path(self.deployment.data)).items():
            if kind == PARTITION:
                self.apply(self.staged_links(name), Fault(Mode.CUT))
        log.info("fault proxy on %d link(s): %s", len(self.links), ", ".join(
            f"{name} ({link.port} -> {link.target_port})" for name, link in self.links.items()))

    async def stop(self) -> None:
        for link in self.links.values():
            await link.stop()

    def staged_links(self, name: str) -> list[str]:
        """The links a staged partition cuts: a region's (`tandem region outage`), or one
        node's (`tandem node outage`): all those with the node at either end, its local
        peers' included."""
        if name in self.deployment.regions:
            return self.deployment.region_links(name)
        return sorted(link for link in self.links if name in link.split(">"))

    def apply(self, names: list[str], fault: Fault) -> None:
        for name in names:
            self.links[name].set(fault)

    def select(self, body: dict) -> list[str]:
        """The link names a control call is about; 400 for names that are not links."""
        names, region = body.get("links"), body.get("region")
        if names is not None and region is not None:
            raise ApiError(400, "bad_request", "give links or region, not both")
        if region is not None:
            if region not in self.deployment.regions:
                raise ApiError(404, "not_found", f"unknown region {region!r}: the regions "
                               f"are {', '.join(self.deployment.regions)}")
            return self.deployment.region_links(region)
        if names is None:
            return sorted(self.links)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ApiError(400, "bad_request", "links must be a list of link names")
        unknown = sorted(set(names) - self.links.keys())
        if unknown:
            raise ApiError(404, "not_found", f"no link named {', '.join(unknown)}; GET "
                           "/v1/links lists them")
        return names


def parse_fault(body: dict) -> Fault:
    unknown = sorted(set(body) - {"links", "region", "mode", "delay"})
    if unknown:
        raise ApiError(400, "bad_request", f"unknown field(s) {', '.join(unknown)}: give "
                       "links or region, mode and delay")
    try:
        mode = Mode(body.get("mode", "ok"))
    except ValueError:
        raise ApiError(400, "bad_request", "mode must be ok, cut or drop") from None
    delay = body.get("delay", 0.0)
    if type(delay) not in (int, float) or not math.isfinite(delay) or not 0 <= delay <= 60:
        raise ApiError(400, "bad_request", "delay must be seconds from 0 to 60")
    return Fault(mode, float(delay))


def build_app(proxy: FaultProxy) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI):
        await proxy.start()
        try:
            yield
        finally:
            await proxy.stop()

    app = FastAPI(title="tandem fault proxy", lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)
    install_error_handlers(app)
    secret = proxy.deployment.secret

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"ok": True, "component": "faultproxy",
                             "links": len(proxy.links)})

    @app.get("/v1/links")
    async def links(request: Request) -> JSONResponse:
        check_secret(request, secret)
        return JSONResponse({"links": [link.view() for link in proxy.links.values()]})

    @app.post("/v1/links")
    async def set_links(request: Request) -> JSONResponse:
        check_secret(request, secret)
        body = await read_json(request)
        if not isinstance(body, dict):
            raise ApiError(400, "bad_request", 'the body must be a JSON object such as '
                                               '{"region": "west", "mode": "cut"}')
        names, fault = proxy.select(body), parse_fault(body)
        proxy.apply(names, fault)
        return JSONResponse({"links": [proxy.links[n].view() for n in names]})

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tandemdb.faultproxy",
                                     description="Run the fault proxy of a local deployment.")
    parser.add_argument("--data", required=True, type=Path, help="deployment data directory")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s faultproxy %(name)s: %(message)s")
    try:
        proxy = FaultProxy(Deployment.load(args.data))
    except (FileNotFoundError, ValueError) as exc:
        parser.error(str(exc))
    config = uvicorn.Config(build_app(proxy), host=HOST,
                            port=proxy.port, log_level="warning",
                            lifespan="on")
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(config).run()
