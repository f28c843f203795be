"""The data API of a node (docs/architecture.md "Node"): SQL and files of its replicas.

Every write passes the node's write gate (gate.py): SQL through the replica's group
committer, files directly. Whatever the gate refuses, reads are still served: a secondary
(`read_only=True`) refuses writes with 409 `not_primary`, a primary without a valid lease
for its current epoch with 503 `no_lease` (docs/leases.md), and while a secondary lags
past the RPO limit with 503 `rpo_exceeded`. `min_lsn` waits until the replica has applied
that lsn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from tandemdb.common import values
from tandemdb.common.http import ApiError, read_json
from tandemdb.engine import Environment, ReadOnly, TxResult, normalise_path
from tandemdb.engine.blobstore import digest_of

from .batcher import Batcher
from .metrics import add_route
from .replicas import Replica, run_sync

if TYPE_CHECKING:
    from .app import Node

MIN_LSN_WAIT = 5.0


def parse_min_lsn(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if type(value) is not int or value < 0:
        raise ApiError(400, "bad_request", "min_lsn must be a non-negative integer")
    return value


class DataApi:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.replicas = node.replicas
        self.gate = node.gate
        self.region = node.region

    # -- shared checks ------------------------------------------------------------------
    async def wait_min_lsn(self, replica: Replica, min_lsn: int | None) -> None:
        if min_lsn is None:
            return
        if not await replica.wait_for_lsn(min_lsn, MIN_LSN_WAIT):
            have = replica.env.last_lsn if replica.env is not None else 0
            raise ApiError(503, "lsn_not_reached",
                           f"replica {replica.name} in region {self.region} has applied lsn "
                           f"{have}, not yet {min_lsn}; retry shortly", {"Retry-After": "1"})

    def batcher(self, replica: Replica) -> Batcher:
        if not isinstance(replica.batcher, Batcher):
            replica.batcher = Batcher(self.gate, replica)
        return replica.batcher

    # -- SQL ----------------------------------------------------------------------------
    async def execute(self, replica: Replica, statements: list) -> TxResult:
        env = replica.require_env()
        if await self.gate.refusal(replica) is not None:
            # A secondary, a primary without its lease, or the RPO guard holding writes
            # back: reads are served, writes refused.
            try:
                return await run_sync(env.execute, statements, read_only=True)
            except ReadOnly:
                # Raises the refusal, unless the write is admitted by now (its lease
                # renewed, a promotion, the secondary caught up): then it is written.
                await self.gate.admit(replica)
        return await self.batcher(replica).submit(statements)

    async def sql(self, request: Request) -> Response:
        replica = self.replicas.get(request.path_params["env"])
        body = await read_json(request)
        if not isinstance(body, dict):
            raise ApiError(400, "bad_request", 'the body must be {"statements": [...]}')
        statements = body.get("statements")
        if not isinstance(statements, list) or not statements:
            raise ApiError(400, "bad_request",
                           '"statements" must be a non-empty list of {"sql", "params"}')
        await self.wait_min_lsn(replica, parse_min_lsn(body.get("min_lsn")))
        result = await self.execute(replica, statements)
        answer = result.to_dict()
        answer["region"] = self.region
        return Response(values.dumps(answer), media_type="application/json")

    # -- files --------------------------------------------------------------------------
    async def put_file(self, request: Request) -> JSONResponse:
        replica = self.replicas.get(request.path_params["env"])
        path = normalise_path(request.path_params["path"])
        replica.require_env()
        await self.gate.admit(replica)
        data = await request.body()
        result = await self.gate.commit(replica, Environment.put_file, path, data,
                                        content=data)
        return JSONResponse({"path": path, "size": len(data), "hash": digest_of(data),
                             "lsn": result.lsn, "epoch": result.epoch, "region": self.region})

    async def get_file(self, request: Request) -> Response:
        replica = self.replicas.get(request.path_params["env"])
        path = normalise_path(request.path_params["path"])
        await self.wait_min_lsn(replica, parse_min_lsn(request.query_params.get("min_lsn")))
        env = replica.require_env()

        def read() -> tuple[bytes, int, int]:
            lsn, epoch = env.last_lsn, env.epoch
            return env.get_file(path), lsn, epoch

        data, lsn, epoch = await run_sync(read)
        return Response(data, media_type="application/octet-stream",
                        headers={"X-Tandem-Lsn": str(lsn), "X-Tandem-Epoch": str(epoch)})

    async def delete_file(self, request: Request) -> JSONResponse:
        replica = self.replicas.get(request.path_params["env"])
        path = normalise_path(request.path_params["path"])
        replica.require_env()
        await self.gate.admit(replica)
        result = await self.gate.commit(replica, Environment.delete_file, path)
        return JSONResponse({"deleted": path, "lsn": result.lsn, "epoch": result.epoch,
                             "region": self.region})

    async def list_files(self, request: Request) -> JSONResponse:
        replica = self.replicas.get(request.path_params["env"])
        await self.wait_min_lsn(replica, parse_min_lsn(request.query_params.get("min_lsn")))
        env = replica.require_env()
        prefix = request.query_params.get("prefix", "")
        files = await run_sync(env.list_files, prefix)
        return JSONResponse({"files": [f.to_dict() for f in files]})


def install(app: FastAPI, node: Node) -> DataApi:
    api = DataApi(node)
    base = "/v1/environments/{env}"
    add_route(app, base + "/sql", api.sql, methods=["POST"])
    add_route(app, base + "/files", api.list_files, methods=["GET"])
    add_route(app, base + "/files/{path:path}", api.put_file, methods=["PUT"])
    add_route(app, base + "/files/{path:path}", api.get_file, methods=["GET"])
    add_route(app, base + "/files/{path:path}", api.delete_file, methods=["DELETE"])
    return api
