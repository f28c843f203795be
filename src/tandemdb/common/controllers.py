"""The controllers a node or gateway may call, and the one it calls now.

A deployment may run one controller per site. Any of them serves any call: one that does
not lead forwards it to the one that does, or answers 503 `no_leader` when none leads
(docs/deploy.md). A node or gateway is given their URLs, its own site's first
(`Deployment.controller_links`), and sticks to one of them until a call there shows that
this controller cannot serve now: no connection, a connection that broke or timed out, or a
503. Then the next call goes to the next URL, round the list: a controller lost a while ago
may be back when its turn comes again.

Whether the failed call itself may be sent again is the caller's to decide: heartbeats and
sync records may (they are idempotent), a forwarded write that may have run may not
(gateway/app.py). With one URL (one controller) nothing moves and nothing extra is logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import httpx

log = logging.getLogger("tandem.controllers")

DISTRUST_SECONDS = 5.0  # a controller that failed a call is not preferred this long


def describe(exc: BaseException) -> str:
    """An exception in one short phrase, for logs and error messages."""
    detail = str(exc)
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


class Controllers:
    """The controller URLs one caller knows and the current one. Use it from one thread
    (or one event loop): each caller (heartbeats, sync records, routing) has its own."""

    def __init__(self, urls: Sequence[str], calls: str,
                 logger: logging.Logger | None = None) -> None:
        """`calls` names what goes to the controller in the log line of a switch
        ("heartbeats now go to …")."""
        if isinstance(urls, str) or not urls:
            raise ValueError(f"{calls} need a list of one controller URL or more, "
                             f"not {urls!r}")
        self.urls = [url.rstrip("/") for url in urls]
        self.calls = calls
        self.log = logger or log
        self.current = 0  # an index into urls
        self._failing: set[str] = set()  # failed since the last answer (quiet once all did)
        self._failed_at: dict[str, float] = {}  # when a call there last failed

    @property
    def url(self) -> str:
        """Where the next call goes."""
        return self.urls[self.current]

    def in_turn(self) -> list[str]:
        """Every URL, the current one first: one call's tries, when it may try each once."""
        return self.urls[self.current:] + self.urls[:self.current]

    def move_on(self, failed: str, why: str) -> None:
        """`failed` could not serve a call (`why`): the next call goes to the next URL.

        Said once per switch, and only while some URL has not failed yet: with every
        controller out of reach, the callers' own rate-limited warnings tell the story.
        A failure at a URL that is no longer the current one moves nothing (calls that
        were under way together move on once)."""
        if len(self.urls) < 2 or failed != self.url:
            return
        self._failing.add(failed)
        self._failed_at[failed] = time.monotonic()
        self.current = (self.current + 1) % len(self.urls)
        if self.url not in self._failing:
            self.log.warning("%s now go to %s (%s: %s)", self.calls, self.url, failed, why)

    def prefer(self, url: str, why: str) -> None:
        """Send the next calls to `url` (the leader, say), if it is one of ours and no call
        there failed in the last `DISTRUST_SECONDS` (saying it leads is not serving)."""
        failed = self._failed_at.get(url)
        if failed is not None and time.monotonic() - failed < DISTRUST_SECONDS:
            return
        if url != self.url and url in self.urls:
            self.current = self.urls.index(url)
            self._failing.clear()
            self.log.info("%s now go to %s (%s)", self.calls, url, why)

    def heard(self, url: str, response: httpx.Response) -> None:
        """`url` answered: a 503 moves on (that controller cannot serve now: it has no
        leader, or cannot reach it), any other answer sticks."""
        if response.status_code == 503:
            self.move_on(url, f"HTTP 503: {response.text[:200]}")
        else:
            self.answered(url)

    def answered(self, url: str) -> None:
        """`url` answered a call (whatever it said, other than a 503)."""
        self._failing.clear()
        if url != self.url and url in self.urls:  # a walk that moved past another's switch
            self.current = self.urls.index(url)

    def __str__(self) -> str:
        return ", ".join(self.urls)
