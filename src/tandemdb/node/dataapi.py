"""The data API of a node (docs/architecture.md "Node"): SQL and files of its replicas.

Writes on a primary go through the replica's group committer; a secondary serves reads
(`read_only=True`) and refuses writes with 409 `not_primary`. A primary without a valid
lease for its current epoch serves reads likewise and refuses writes with 503 `no_lease`
(docs/leases.md); every write is checked again under the engine's lock before it commits.
`min_lsn` waits until the replica has applied that lsn, and the RPO guard refuses writes
while a secondary lags too far behind.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from tandemdb.common import values
from tandemdb.common.http import ApiError, read_json
from tandemdb.common.roles import Role
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

    async def rpo_breach(self, replica: Replica) -> str | None:
        """Why writes are refused now (a secondary lags past the RPO limit), or None."""
        record = replica.record
        if record.role != Role.PRIMARY or not record.secondaries:
            return None
        await replica.refresh_lag()
        limit = record.rpo_limit_seconds
        for peer in record.secondaries:
            entries, seconds = replica.lag(peer.node)
            if seconds > limit:
                return (f"the secondary of {replica.name} in region {peer.region} (node "
                        f"{peer.node}) is {seconds:.2f}s ({entries} entries) behind, over the "
                        f"RPO limit of {limit:g}s; writes resume when it catches up")
        return None

    async def check_write(self, replica: Replica) -> None:
        """Writes need a writable replica and a secondary within the RPO limit."""
        self.replicas.require_writable(replica)
        breach = await self.rpo_breach(replica)
        if breach:
            raise ApiError(503, "rpo_exceeded", breach, {"Retry-After": "1"})

    def batcher(self, replica: Replica) -> Batcher:
        if replica.batcher is None:
            replica.batcher = Batcher(self.replicas, replica)
        return replica.batcher  # type: ignore[return-value]

    # -- SQL ----------------------------------------------------------------------------
    async def execute(self, replica: Replica, statements: list) -> TxResult:
        env = replica.require_env()
        if not self.replicas.may_write(replica):
            # A secondary, or a primary without its lease: reads are served, writes refused.
            try:
                return await run_sync(env.execute, statements, read_only=True)
            except ReadOnly:
                # Raises the refusal, unless the replica became writable meanwhile (its
                # lease renewed, a promotion): then the statements are written after all.
                self.replicas.require_writable(replica)
        breach = await self.rpo_breach(replica)
        if breach:
            # Reads still work while the guard holds writes back.
            try:
                return await run_sync(env.execute, statements, read_only=True)
            except ReadOnly:
                raise ApiError(503, "rpo_exceeded", breach, {"Retry-After": "1"}) from None
        return await self.batcher(replica).submit(statements)

    async def sql(self, request: Request) -> JSONResponse:
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
        env = replica.require_env()
        await self.check_write(replica)
        data = await request.body()
        with replica.writing():
            self.replicas.require_writable(replica)  # it may have been fenced meanwhile
            result = await run_sync(self._put_file, replica, env, path, data)
        replica.notify()
        return JSONResponse({"path": path, "size": len(data), "hash": digest_of(data),
                             "lsn": result.lsn, "epoch": result.epoch, "region": self.region})

    def _put_file(self, replica: Replica, env: Environment, path: str,
                  data: bytes) -> TxResult:
        """Worker thread: make the blob durable (the slow part), then check the lease and
        role again under the engine's lock, so the row never commits after the lease
        expired or a fence, however long the blob took."""
        with env.pin_blobs([digest_of(data)]):
            env.blobs.put(data)
            with env.exclusive():
                self.replicas.require_writable(replica)
                return env.put_file(path, data)  # the blob is there: only the row is written

    def _delete_file(self, replica: Replica, env: Environment, path: str) -> TxResult:
        with env.exclusive():  # worker thread: re-check right before the commit
            self.replicas.require_writable(replica)
            return env.delete_file(path)

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
        env = replica.require_env()
        await self.check_write(replica)
        with replica.writing():
            self.replicas.require_writable(replica)  # it may have been fenced meanwhile
            result = await run_sync(self._delete_file, replica, env, path)
        replica.notify()
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
