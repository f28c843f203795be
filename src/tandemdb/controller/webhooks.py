"""Webhooks: tenants' URLs that get every event, at least once (docs/operations.md).

Registrations live under `webhooks/<id>` (`wh-000001`, numbered by `counters/webhooks`).
Every event that matches a webhook (all events when its `environments` is null, else the
events of those environments) is put in its **outbox**, `outbox/<webhook>/<event>`, in the
same store transaction that records the event (`Webhooks.enqueue`, called by
`Events.stage`). So an event is never recorded without its deliveries, even if the
controller dies a moment later.

`Delivery` drains the outbox: per webhook in event order, one POST at a time, signed with
HMAC-SHA256 over "<timestamp>.<body>". A 2xx answer removes the entry; anything else, or no
answer, leaves it at the head of its webhook's queue with its next attempt 0.5 s later,
doubling up to 60 s; `last_error` says what went wrong (an answer's status, never its body).
Targets must be public addresses unless the deployment allows private ones (`targets.py`).
The attempts and the next time are in the store, so the backoff goes on across controller
restarts. Receivers deduplicate by event id (a delivery whose answer was lost comes again).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import json
import logging
import time
from typing import Any
from urllib.parse import urlsplit

import httpx

from tandemdb.common.http import ApiError

from .bodies import RegisterWebhook, parse, shown
from .catalog import iso_now
from .events import Events
from .store import Store, Txn, increment
from .targets import ALLOW_HINT, Refused, literal_refusal, pin

log = logging.getLogger("tandem.controller.webhooks")

PREFIX = "webhooks/"
OUTBOX = "outbox/"
COUNTER = "counters/webhooks"
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 60.0
DELIVERY_TIMEOUT = 5.0
IDLE_SECONDS = 1.0  # a look at the outbox at least this often, wake-ups aside


def outbox_key(webhook: str, event: int) -> str:
    return f"{OUTBOX}{webhook}/{event:012d}"


def backoff(attempts: int) -> float:
    """Seconds before the next attempt after `attempts` failed ones: 0.5, 1, 2 … 60."""
    return min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** max(0, attempts - 1))


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The `X-Tandem-Signature` value: `sha256=<hex HMAC-SHA256(secret, "<ts>.<body>")>`."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def parse_registration(body: Any, allow_private: bool = False,
                       ) -> tuple[str, str, list[str] | None]:
    """Check a `POST /v1/webhooks` body (its schema is `bodies.RegisterWebhook`) and, unless
    `allow_private`, that its URL names no private address; 400 that says what to fix."""
    hook = parse(RegisterWebhook, body)
    if not allow_private:
        host = urlsplit(hook.url).hostname or ""
        why = literal_refusal(host)
        if why is not None:
            raise _bad(f"invalid url {shown(hook.url)}: {why}; {ALLOW_HINT}")
    environments = None if hook.environments is None else sorted(set(hook.environments))
    return hook.url, hook.secret, environments


def _bad(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


def not_found(webhook: str) -> ApiError:
    return ApiError(404, "not_found", f"webhook {webhook!r} does not exist: GET /v1/webhooks "
                                      "lists them")


def public(hook: dict) -> dict:
    """A registration as the API shows it: never the secret."""
    return {k: hook[k] for k in ("id", "url", "environments", "created_at")}


class Webhooks:
    """Registrations, and the outbox side of every event."""

    def __init__(self, store: Store, events: Events, allow_private: bool = False) -> None:
        self.store, self.events, self.allow_private = store, events, allow_private
        events.outbox = self

    def register(self, body: Any) -> dict:
        """Store a new webhook; answers it as the API shows it. Blocking."""
        url, secret, environments = parse_registration(body, self.allow_private)

        def build(txn: Txn) -> dict:
            hook_id = f"wh-{increment(self.store, txn, COUNTER):06d}"
            hook = {"id": hook_id, "url": url, "secret": secret,
                    "environments": environments, "created_at": iso_now()}
            txn.expect(PREFIX + hook_id, None).put(PREFIX + hook_id, hook)
            return hook

        hook = self.events.commit(build, "webhook registration")[0]
        log.info("webhook %s: registered, delivering %s to %s", hook["id"],
                 "the events of all environments" if environments is None else
                 "the events of " + ", ".join(environments), url)
        return public(hook)

    def list(self) -> list[dict]:
        """Every webhook, with how many deliveries wait and the last delivery error."""
        hooks = [item.value for item in self.store.list(PREFIX).values()]
        views = []
        for hook in hooks:
            entries = [i.value for i in self.store.list(f"{OUTBOX}{hook['id']}/").values()]
            views.append({**public(hook), "pending": len(entries),
                          "last_error": entries[0].get("last_error") if entries else None})
        return views

    def remove(self, hook_id: str) -> dict:
        """Delete a webhook and its undelivered entries, in one transaction. Blocking."""
        def build(txn: Txn) -> None:
            item = self.store.get(PREFIX + hook_id) if hook_id.startswith("wh-") else None
            if item is None:
                raise not_found(hook_id)
            txn.expect(PREFIX + hook_id, item.version).delete(PREFIX + hook_id)
            for key in self.store.list(f"{OUTBOX}{hook_id}/"):
                txn.delete(key)

        self.events.commit(build, f"webhook {hook_id}: deletion")
        log.info("webhook %s: deleted on request, with its undelivered events", hook_id)
        return {"deleted": hook_id}

    def enqueue(self, txn: Txn, event: dict) -> None:
        """Put `event` in the outbox of every webhook it matches (inside its transaction)."""
        for item in self.store.list(PREFIX).values():
            hook = item.value
            wanted = hook["environments"]
            if wanted is None or event.get("environment") in wanted:
                txn.put(outbox_key(hook["id"], event["id"]),
                        {"webhook": hook["id"], "event": event["id"], "attempts": 0,
                         "next_at": 0.0, "last_error": None})


class Delivery:
    """The loop that POSTs outbox entries, one webhook queue at a time each."""

    def __init__(self, store: Store, events: Events, allow_private: bool = False) -> None:
        self.store, self.events, self.allow_private = store, events, allow_private
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(DELIVERY_TIMEOUT),
                                      follow_redirects=False,
                                      headers={"user-agent": "tandem-webhooks"})
        self._active: dict[str, asyncio.Task] = {}
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def notify(self) -> None:
        """Something new in the outbox (called from any thread, after the commit)."""
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def run(self) -> None:
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        try:
            while True:
                self._wake.clear()
                wait = await self._start_due()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), min(wait, IDLE_SECONDS))
        finally:
            for task in self._active.values():
                task.cancel()
            await asyncio.gather(*self._active.values(), return_exceptions=True)
            await self.http.aclose()

    async def _start_due(self) -> float:
        """Start a queue runner for each webhook whose head entry is due; seconds to the
        next due head otherwise."""
        entries = await asyncio.to_thread(self.store.list, OUTBOX)
        hooks = {item.value["id"]: item.value
                 for item in (await asyncio.to_thread(self.store.list, PREFIX)).values()}
        queues: dict[str, list[tuple[str, dict]]] = {}
        for key, item in entries.items():
            queues.setdefault(item.value["webhook"], []).append((key, item.value))
        now, wait = time.time(), IDLE_SECONDS
        for hook_id, queue in queues.items():
            if hook_id not in hooks:  # left by a deletion that raced the event
                await asyncio.to_thread(self._discard, [key for key, _ in queue])
                continue
            if hook_id in self._active:
                continue
            due_in = queue[0][1]["next_at"] - now
            if due_in > 0:
                wait = min(wait, due_in)
                continue
            task = asyncio.create_task(self._drain(hooks[hook_id], queue))
            self._active[hook_id] = task
            task.add_done_callback(functools.partial(self._done, hook_id))
        return max(wait, 0.0)

    def _discard(self, keys: list[str]) -> None:
        for key in keys:
            self.store.delete(key)

    def _done(self, hook_id: str, _task: object = None) -> None:
        self._active.pop(hook_id, None)
        if self._wake is not None:
            self._wake.set()  # look again: entries may have come meanwhile

    async def _drain(self, hook: dict, queue: list[tuple[str, dict]]) -> None:
        """Deliver the queue in order; stop at the first failure (it is retried later)."""
        for key, entry in queue:
            if await asyncio.to_thread(self.store.get, key) is None:
                continue  # the webhook was deleted meanwhile
            event = await asyncio.to_thread(self.events.get, entry["event"])
            if event is None:  # trimmed from the log: nothing left to send
                await asyncio.to_thread(self.store.delete, key)
                continue
            problem = await self._post(hook, event)
            attempt = entry["attempts"] + 1
            if problem is None:
                await asyncio.to_thread(self.store.delete, key)
                log.info("webhook %s: event %d (%s) delivered to %s%s", hook["id"], event["id"],
                         event["type"], hook["url"],
                         f" at attempt {attempt}" if attempt > 1 else "")
                continue
            delay = backoff(attempt)
            await asyncio.to_thread(self._retry_later, key, attempt, delay, problem)
            log.warning("webhook %s: event %d (%s) not delivered to %s (attempt %d): %s; "
                        "next attempt in %.1f s", hook["id"], event["id"], event["type"],
                        hook["url"], attempt, problem, delay)
            return

    def _retry_later(self, key: str, attempt: int, delay: float, problem: str) -> None:
        item = self.store.get(key)
        if item is None:
            return  # the webhook was deleted meanwhile
        self.store.compare_and_set(key, item.version, {
            **item.value, "attempts": attempt, "next_at": time.time() + delay,
            "last_error": problem})

    async def _post(self, hook: dict, event: dict) -> str | None:
        """POST one event, signed; None if the receiver took it, else what went wrong."""
        body = json.dumps(event, separators=(",", ":")).encode()
        timestamp = str(int(time.time()))
        headers = {"content-type": "application/json",
                   "x-tandem-event-id": str(event["id"]),
                   "x-tandem-timestamp": timestamp,
                   "x-tandem-signature": sign(hook["secret"], timestamp, body)}
        try:
            target = await pin(hook["url"], self.allow_private)
            # Streamed and never read: only the status counts, so a receiver cannot make
            # the controller buffer a large answer, and its body is never shown (it may be
            # whatever an internal address answers).
            async with self.http.stream("POST", target.url, content=body,
                                        headers={**headers, **target.headers},
                                        extensions=target.extensions) as response:
                status = response.status_code
        except Refused as exc:
            return str(exc)
        except (httpx.HTTPError, OSError) as exc:
            return f"no answer ({type(exc).__name__}: {exc or 'no detail'})"
        return None if 200 <= status < 300 else f"answered {status}"
