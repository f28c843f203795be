"""A thin etcd v3 client over etcd's JSON gateway (`POST /v3/...`).

Why the gateway rather than gRPC: see docs/etcd.md (measured); HTTP itself is `etcdhttp`.
Keys and values travel as base64, 64-bit numbers as strings; this module turns answers into
typed records once, here.

Failure rules, the ones a coordination store lives by:
- every call is bounded (`timeout`, 3 s by default), whatever the network does;
- a request that never reached a member (connection refused, connect timeout) is tried on
  the next endpoint;
- a write that was sent but not answered is never sent again (its outcome is unknown): the
  caller gets `EtcdUnavailable` and decides. Reads may be retried on another endpoint.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

from . import Compacted, StoreError
from .etcdhttp import Endpoint, NoAnswer, SendFailed, describe

DEFAULT_TIMEOUT = 3.0
PROBE_TIMEOUT = 0.5  # a status probe that explains a failure (no leader?)
RETRY_PAUSE = 0.1  # between two rounds of a read that every member turned down
HISTORY_GRACE = 1.0  # how long a watch that starts behind waits for etcd to send the past
# gRPC codes the gateway passes on that mean "the cluster cannot answer now".
UNAVAILABLE_CODES = {4, 14}  # deadline exceeded, unavailable
# etcd's answers that mean "not now" rather than "never" (resource exhausted, code 8, also
# covers a request too large, which is "never").
BUSY = ("no leader", "too many requests", "leader changed", "request timed out")
LEASE_NOT_FOUND = "requested lease not found"


class EtcdError(StoreError):
    """etcd refused a request (a bad argument, or a lease that does not exist)."""


class EtcdUnavailable(StoreError):
    """No etcd member could answer: unreachable, no quorum, or no answer in time."""


class LeaseLost(StoreError):
    """The lease expired or was revoked: whatever it held is gone."""


class KeyValue(NamedTuple):
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


class Event(NamedTuple):
    """One watch event; `deleted` events carry the key and the deleting revision."""

    deleted: bool
    kv: KeyValue


class TxnResult(NamedTuple):
    succeeded: bool
    revision: int  # the header revision: the new one when the txn wrote
    responses: list[dict]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def prefix_end(prefix: bytes) -> bytes:
    """The range end that covers every key starting with `prefix` (b"\\0": all keys)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b"\0"
    return stripped[:-1] + bytes([stripped[-1] + 1])


def parse_kv(raw: dict) -> KeyValue:
    return KeyValue(base64.b64decode(raw.get("key", "")), base64.b64decode(raw.get("value", "")),
                    int(raw.get("create_revision", 0)), int(raw.get("mod_revision", 0)),
                    int(raw.get("version", 0)), int(raw.get("lease", 0)))


# -- txn parts ---------------------------------------------------------------------------

def put_op(key: bytes, value: bytes, lease: int = 0) -> dict:
    put: dict[str, Any] = {"key": b64(key), "value": b64(value)}
    if lease:
        put["lease"] = str(lease)
    return {"request_put": put}


def delete_op(key: bytes) -> dict:
    return {"request_delete_range": {"key": b64(key)}}


def range_op(key: bytes) -> dict:
    return {"request_range": {"key": b64(key)}}


def value_is(key: bytes, value: bytes) -> dict:
    return {"key": b64(key), "target": "VALUE", "result": "EQUAL", "value": b64(value)}


def mod_revision_is(key: bytes, revision: int) -> dict:
    return {"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(revision)}


def absent(key: bytes) -> dict:
    return {"key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}


class EtcdClient:
    """Calls to an etcd cluster through any of its `endpoints` (`http://host:port`)."""

    def __init__(self, endpoints: Sequence[str], timeout: float = DEFAULT_TIMEOUT) -> None:
        if not endpoints:
            raise ValueError("an etcd client needs at least one endpoint")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.timeout = timeout
        self._http = {e: Endpoint(e) for e in self.endpoints}
        self._preferred = 0  # index of the endpoint that answered last
        self._watching: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False

    # -- the one request path ------------------------------------------------------------

    def call(self, path: str, body: dict, *, write: bool, timeout: float | None = None) -> dict:
        """POST `body` to `path` on the first endpoint that takes it; the parsed answer.

        A read gets an equal share of the time left on each endpoint still to try, so one
        member that hangs (paused, or cut off without quorum) cannot use it all; a write
        gets all of it, since once sent it is never sent again. A member that failed is
        tried last by the next call. A read that every member turned down (say while etcd
        elects a new raft leader: "leader changed", "no leader") goes round them again,
        `RETRY_PAUSE` apart, until its time is up."""
        budget = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        while True:
            answer, failures, silent = self._round(path, body, write, deadline)
            if answer is not None:
                return answer
            if write or deadline - time.monotonic() < 2 * RETRY_PAUSE:
                break
            time.sleep(RETRY_PAUSE)
        why = self._probe(silent) if silent else ""
        raise EtcdUnavailable(self._unreachable(failures, budget) + why)

    def _round(self, path: str, body: dict, write: bool,
               deadline: float) -> tuple[dict | None, list[str], str | None]:
        """One try at each endpoint in turn: (the answer, or None with each endpoint's
        failure and the first that took the request and did not answer)."""
        failures: list[str] = []
        silent: str | None = None  # a member that took a request and did not answer
        order = self._order()
        for tried, index in enumerate(order):
            endpoint = self.endpoints[index]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            attempt = remaining if write else remaining / (len(order) - tried)
            try:
                status, raw = self._post(endpoint, path, body, attempt)
            except SendFailed as exc:
                failures.append(f"{endpoint}: {exc}")
                continue  # never reached etcd: safe to try the next member
            except NoAnswer as exc:
                self._avoid(index)
                if write:
                    raise self._unknown_outcome(endpoint, path, exc) from exc
                failures.append(f"{endpoint}: {exc}")
                silent = silent or endpoint
                continue
            data = self._parse(endpoint, status, raw)
            if "error" not in data:
                self._preferred = index
                return data, failures, silent
            code, message = int(data.get("code", 0)), str(data.get("message") or data["error"])
            if code not in UNAVAILABLE_CODES and not any(word in message for word in BUSY):
                raise EtcdError(f"etcd at {endpoint} refused {path}: {message}")
            self._avoid(index)
            if write:
                raise EtcdUnavailable(f"etcd at {endpoint} could not take a write ({message}); "
                                      f"it has no quorum or no leader now, and the write's "
                                      f"outcome is unknown")
            failures.append(f"{endpoint}: {message}")
        return None, failures, silent

    def _post(self, endpoint: str, path: str, body: dict, timeout: float) -> tuple[int, bytes]:
        if self._closed:
            raise StoreError("etcd store is closed")
        return self._http[endpoint].post(path, body, timeout)

    def _avoid(self, index: int) -> None:
        if self._preferred == index:
            self._preferred = (index + 1) % len(self.endpoints)

    def _order(self) -> list[int]:
        first = self._preferred
        return [(first + i) % len(self.endpoints) for i in range(len(self.endpoints))]

    def _parse(self, endpoint: str, status: int, raw: bytes) -> dict:
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise EtcdError(f"etcd at {endpoint} answered HTTP {status} with "
                            f"no JSON: {raw[:200]!r}") from exc
        if not isinstance(data, dict):
            raise EtcdError(f"etcd at {endpoint} answered {data!r}")
        return data

    def _unknown_outcome(self, endpoint: str, path: str, exc: Exception) -> EtcdUnavailable:
        return EtcdUnavailable(
            f"etcd at {endpoint} did not answer {path} ({exc}){self._probe(endpoint)}; "
            f"the write's outcome is unknown, so it is not sent again")

    def _unreachable(self, failures: list[str], budget: float) -> str:
        tried = ", ".join(self.endpoints)
        detail = "; ".join(failures) if failures else f"no answer within {budget:g} s"
        return f"etcd unreachable at {tried} ({detail})"

    def _probe(self, endpoint: str) -> str:
        """Why a member did not answer, if a quick status call can tell: no leader."""
        status = self.status(endpoint, PROBE_TIMEOUT)
        if status is not None and int(status.get("leader", 0)) == 0:
            return ": etcd has no quorum (this member sees no leader)"
        return ""

    # -- kv ------------------------------------------------------------------------------

    def range(self, key: bytes, range_end: bytes | None = None, *, limit: int = 0,
              descending: bool = False, revision: int = 0, count_only: bool = False,
              ) -> tuple[int, list[KeyValue], int]:
        """(header revision, key-values in key order, count) of `key` or [key, range_end)."""
        body: dict[str, Any] = {"key": b64(key)}
        if range_end is not None:
            body["range_end"] = b64(range_end)
        if limit:
            body["limit"] = str(limit)
        if descending:
            body["sort_order"], body["sort_target"] = "DESCEND", "KEY"
        if revision:
            body["revision"] = str(revision)
        if count_only:
            body["count_only"] = True
        data = self.call("/v3/kv/range", body, write=False)
        kvs = [parse_kv(raw) for raw in data.get("kvs", [])]
        return int(data["header"]["revision"]), kvs, int(data.get("count", 0))

    def txn(self, compare: list[dict], success: list[dict],
            failure: Sequence[dict] = ()) -> TxnResult:
        data = self.call("/v3/kv/txn", {"compare": compare, "success": success,
                                        "failure": list(failure)}, write=True)
        return TxnResult(bool(data.get("succeeded", False)), int(data["header"]["revision"]),
                         data.get("responses", []))

    # -- leases --------------------------------------------------------------------------

    def lease_grant(self, ttl: int) -> tuple[int, int]:
        """A new lease: (id, granted ttl in seconds)."""
        data = self.call("/v3/lease/grant", {"TTL": str(ttl)}, write=True)
        if data.get("error"):
            raise EtcdError(f"etcd refused a lease of {ttl} s: {data['error']}")
        return int(data["ID"]), int(data.get("TTL", 0))

    def lease_keepalive(self, lease: int) -> int:
        """Renew `lease` once; its ttl now, 0 when it no longer exists."""
        data = self.call("/v3/lease/keepalive", {"ID": str(lease)}, write=False)
        return int(data.get("result", data).get("TTL", 0))

    def lease_revoke(self, lease: int) -> None:
        try:
            self.call("/v3/lease/revoke", {"ID": str(lease)}, write=True)
        except EtcdError as exc:
            if LEASE_NOT_FOUND not in str(exc):
                raise

    def lease_ttl(self, lease: int) -> int:
        """Seconds left on `lease`, -1 when it does not exist."""
        data = self.call("/v3/lease/timetolive", {"ID": str(lease)}, write=False)
        return int(data.get("TTL", -1))

    # -- cluster -------------------------------------------------------------------------

    def member_list(self) -> list[dict]:
        return self.call("/v3/cluster/member/list", {}, write=False).get("members", [])

    def status(self, url: str, timeout: float = 1.0) -> dict | None:
        """One member's status (leader id, raft term, db size), None if it does not answer."""
        url = url.rstrip("/")
        endpoint = self._http.get(url)
        if endpoint is None:  # a member this client was not given: a one-off connection
            endpoint = Endpoint(url)
        try:
            data = json.loads(endpoint.post("/v3/maintenance/status", {}, timeout)[1])
        except (SendFailed, NoAnswer, ValueError):
            return None
        finally:
            if url not in self._http:
                endpoint.close()
        return data if isinstance(data, dict) and "error" not in data else None

    # -- watch ---------------------------------------------------------------------------

    def watch(self, key: bytes, range_end: bytes, start_revision: int,
              timeout: float) -> list[Event]:
        """Events in [key, range_end) from `start_revision` on: at once if some exist, else
        the first ones within `timeout` s, else []. `Compacted` if etcd no longer keeps
        `start_revision`. One etcd watch answer holds whole revisions, so a revision's
        events are never split between two calls.

        etcd sends past events (a watch that starts behind) from a loop that runs every
        100 ms, and sends nothing when none of them match. So when the store has moved past
        `start_revision`, the wait is at least `HISTORY_GRACE`, to hear the past out."""
        deadline = time.monotonic() + max(0.0, timeout)
        current, _, _ = self.range(key, count_only=True)
        if start_revision <= current:
            deadline = max(deadline, time.monotonic() + HISTORY_GRACE)
        body = {"create_request": {"key": b64(key), "range_end": b64(range_end),
                                   "start_revision": str(start_revision)}}
        failures: list[str] = []
        for index in self._order():
            endpoint = self.endpoints[index]
            if self._closed:
                return []
            try:
                return self._watch_on(endpoint, body, deadline)
            except SendFailed as exc:
                failures.append(f"{endpoint}: {exc}")
            except NoAnswer as exc:  # cut mid-way (a member that died): a read, so go on
                if self._closed:
                    return []
                failures.append(f"{endpoint}: {exc}")
            if time.monotonic() >= deadline:
                break
        raise EtcdUnavailable(self._unreachable(failures, timeout))

    def _watch_on(self, endpoint: str, body: dict, deadline: float) -> list[Event]:
        """The first events one member sends, or [] at the deadline (or on close)."""
        remaining = max(0.05, deadline - time.monotonic())
        with self._http[endpoint].stream("/v3/watch", body, remaining) as (response, sock):
            self._register(sock)
            try:
                while True:
                    sock.settimeout(max(0.01, deadline - time.monotonic()))
                    line = response.readline()
                    if not line:  # the member ended the stream
                        if self._closed:
                            return []
                        raise NoAnswer("the watch stream ended")
                    if not line.strip():
                        continue
                    events = self._watch_result(endpoint, json.loads(line)).get("events")
                    if events:
                        return [Event(e.get("type") == "DELETE", parse_kv(e["kv"]))
                                for e in events]
                    if time.monotonic() >= deadline or self._closed:
                        return []
            except TimeoutError:
                return []  # nothing changed in time
            except (OSError, http.client.HTTPException) as exc:
                if self._closed:
                    return []
                raise NoAnswer(describe(exc)) from exc
            finally:
                with self._lock:
                    self._watching.discard(sock)

    def _watch_result(self, endpoint: str, message: dict) -> dict:
        if "error" in message:
            error = message["error"]
            if isinstance(error, dict):
                error = error.get("message", error)
            raise EtcdUnavailable(f"etcd watch at {endpoint} failed: {error}")
        result = message.get("result", {})
        if result.get("canceled"):
            compacted = int(result.get("compact_revision", 0))
            if compacted:
                raise Compacted(f"etcd compacted its history up to revision {compacted}; "
                                f"re-read the keys and watch from the current revision")
            raise EtcdError(f"etcd at {endpoint} cancelled a watch: "
                            f"{result.get('cancel_reason', 'no reason given')}")
        return result

    def _register(self, sock: socket.socket) -> None:
        """Note a watch's socket, so `close()` can wake a read blocked on it."""
        with self._lock:
            self._watching.add(sock)
        if self._closed:  # closed while this watch was connecting
            self._interrupt(sock)

    @staticmethod
    def _interrupt(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Close every connection; watches blocked in a read return [] at once."""
        self._closed = True
        with self._lock:
            watching = list(self._watching)
        for sock in watching:
            self._interrupt(sock)
        for endpoint in self._http.values():
            endpoint.close()
