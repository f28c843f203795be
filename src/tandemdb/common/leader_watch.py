"""Keep a gateway's or node's controller calls pointed at the controller that leads.

Any controller serves any call (a follower forwards it), but a controller that hangs (a
paused or overloaded machine) accepts connections and answers nothing, so calls sent there,
directly or forwarded by a follower, wait for their whole timeout. Every `INTERVAL` the
watch asks each controller's `/healthz` (within `PROBE_SECONDS`); it then sends its
caller's calls to the one that says it leads, or, while none does, away from one that did
not answer. A hung leader costs new calls about a second, instead of a timeout each, and an
election is followed as soon as it ends. Gateways steer their control calls and routing
polls with it, nodes their heartbeats (a new leader must hear from every node before its
unknown window ends, controller/topology.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import httpx

from tandemdb.common.controllers import Controllers

INTERVAL = 0.5
PROBE_SECONDS = 0.5


class LeaderWatch:
    """Background task that steers `controllers` (a caller's lists of controller URLs,
    one per kind of call, all used on this event loop) towards the leader. Nothing to do
    with one controller."""

    def __init__(self, controllers: Sequence[Controllers]) -> None:
        self.controllers = list(controllers)
        self.urls = self.controllers[0].urls if self.controllers else []
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if len(self.urls) > 1:
            self._task = asyncio.create_task(self.run(), name="leader-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=PROBE_SECONDS) as http:
            while True:
                answers = await asyncio.gather(*(probe_health(http, url) for url in self.urls))
                health = dict(zip(self.urls, answers, strict=True))
                leader = next((url for url, h in health.items() if h.get("leading")), None)
                for controllers in self.controllers:
                    if leader is not None:
                        controllers.prefer(leader, "it leads")
                    elif not health[controllers.url]:
                        controllers.move_on(controllers.url, "no answer to /healthz in "
                                                             f"{PROBE_SECONDS:g} s")
                await asyncio.sleep(INTERVAL)


async def probe_health(http: httpx.AsyncClient, url: str) -> dict:
    """The `/healthz` answer of the process at `url`, or {} if it gives none (within the
    client's timeout) or something that is not a JSON object (whatever else listens on that
    port must not end the watch with an AttributeError): the leader watch and the
    control-plane view both ask this way."""
    try:
        answer = await http.get(url + "/healthz")
        data = answer.json() if answer.status_code == 200 else {}
    except (httpx.HTTPError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
