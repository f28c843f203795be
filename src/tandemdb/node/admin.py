"""Admin endpoints of a node (controller → node): create, update, inspect and drop replicas,
the logical checksum used to compare replicas after catch-up, and the re-seed of a
secondary from a fresh snapshot of its primary (what ends a halted stream, halts.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tandemdb.common.http import ApiError, read_json
from tandemdb.common.retry import CAS_ATTEMPTS
from tandemdb.common.roles import Role

from .metrics import add_route
from .replicas import Replica, run_sync

if TYPE_CHECKING:
    from .app import Node


class Admin:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.replicas = node.replicas

    async def status(self, replica: Replica) -> dict:
        """What this node knows of one replica (the heartbeat's view, and a bit more)."""
        env = replica.env
        first = await run_sync(env.first_lsn) if env is not None else 0
        if replica.writable:
            await replica.refresh_lag()
        return {"env": replica.name, "node": self.node.name, "region": self.node.region,
                "role": replica.role, "record": replica.record.to_dict(),
                "epoch": env.epoch if env is not None else None,
                "last_lsn": env.last_lsn if env is not None else None,
                "first_lsn": first,
                "seeding": dict(replica.seeding) if replica.seeding else None,
                "last_seed": replica.last_seed, "stream_error": replica.stream_error,
                "halted": replica.halted,
                "consumers": replica.consumers_report()}

    async def put(self, request: Request) -> JSONResponse:
        name = request.path_params["env"]
        body = await read_json(request)
        if isinstance(body, dict) and body.get("env") not in (None, name):
            raise ApiError(400, "bad_request",
                           f"the record names {body.get('env')!r}, the path {name!r}")
        replica = await self.replicas.ensure(name, body)
        return JSONResponse(await self.status(replica))

    async def delete(self, request: Request) -> JSONResponse:
        name = request.path_params["env"]
        await self.replicas.drop(name)
        return JSONResponse({"deleted": name})

    async def get(self, request: Request) -> JSONResponse:
        replica = self.replicas.get(request.path_params["env"])
        return JSONResponse(await self.status(replica))

    async def list(self, request: Request) -> JSONResponse:
        return JSONResponse({"replicas": [await self.status(r) for r in self.replicas]})

    async def reseed(self, request: Request) -> JSONResponse:
        """Copy a secondary afresh from a snapshot of its primary, in the background (202).
        Its stream, halted or not, goes on from the snapshot's lsn."""
        replica = self.replicas.get(request.path_params["env"])
        await read_json(request, allow_empty=True)  # no fields; a body must still be JSON
        primary = replica.record.primary
        if replica.role != Role.SECONDARY or primary is None:
            raise ApiError(409, "not_secondary", f"replica {replica.name} on {self.node.name} "
                           f"is {replica.role}: only a secondary is re-seeded, from a "
                           "snapshot of its primary")
        puller = self.node.puller
        if puller is None:
            raise ApiError(409, "starting", f"node {self.node.name} is starting; retry "
                           "shortly", {"Retry-After": "1"})
        started = await puller.reseed(replica)
        return JSONResponse({**await self.status(replica), "reseed_started": started},
                            status_code=202)

    async def checksum(self, request: Request) -> JSONResponse:
        replica = self.replicas.get(request.path_params["env"])
        env = replica.require_env()

        def compute() -> dict:
            # The lsn must belong to the checksummed state: retry if a commit slipped in,
            # as often as a compare-and-set is retried.
            for _ in range(CAS_ATTEMPTS):
                lsn = env.last_lsn
                result = env.checksum().to_dict()
                if env.last_lsn == lsn:
                    result["lsn"] = lsn
                    result["epoch"] = env.epoch
                    return result
            raise ApiError(503, "busy", f"{replica.name} kept changing during the checksum; "
                           "retry", {"Retry-After": "1"})

        return JSONResponse(await run_sync(compute))


def install(app: FastAPI, node: Node) -> Admin:
    admin = Admin(node)
    base = "/internal/v1/replicas"
    add_route(app, base, admin.list, methods=["GET"])
    add_route(app, base + "/{env}", admin.put, methods=["PUT"])
    add_route(app, base + "/{env}", admin.delete, methods=["DELETE"])
    add_route(app, base + "/{env}", admin.get, methods=["GET"])
    add_route(app, base + "/{env}/checksum", admin.checksum, methods=["GET"])
    add_route(app, base + "/{env}/reseed", admin.reseed, methods=["POST"])
    return admin
