"""Consumers belong to the node's event loop (replicas.py): a record adopted in a worker
thread must not add or remove consumers there while the loop iterates over them (the
stream, the upkeep, lag reports), which raised "dictionary changed size during iteration"
under load (issue 10, item 3).

The replica's consumer table records the thread of every change; meanwhile the loop
iterates it as the stream and the upkeep do, with a tiny GIL switch interval so that a
change from another thread would land mid-iteration."""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path

from tandemdb.node.replicas import ReplicaSet

ROUNDS = 30
PEERS = 40


class LoopOwned(dict):
    """A dict that notes every change made from a thread other than its owner's."""

    def __init__(self, owner: int) -> None:
        super().__init__()
        self.owner, self.foreign = owner, []

    def _note(self, what: str) -> None:
        if threading.get_ident() != self.owner:
            self.foreign.append((what, threading.current_thread().name))

    def __setitem__(self, key, value) -> None:
        self._note("set")
        super().__setitem__(key, value)

    def __delitem__(self, key) -> None:
        self._note("del")
        super().__delitem__(key)


def peers(side: str) -> list[dict]:
    return [{"node": f"{side}-{i}", "region": "east", "url": f"http://{side}-{i}"}
            for i in range(PEERS)]


def test_consumers_change_only_on_the_loop(tmp_path: Path) -> None:
    async def scenario() -> None:
        replicas = ReplicaSet(tmp_path, "west-1", "west")
        await replicas.load()
        try:
            replica = await replicas.ensure("alpha", {"role": "primary", "epoch": 1,
                                                      "secondaries": peers("a")})
            table = LoopOwned(threading.get_ident())
            table.update(replica.consumers)
            replica.consumers = table
            errors: list[BaseException] = []
            done = asyncio.Event()

            async def iterate() -> None:  # what the stream, upkeep and reports do
                while not done.is_set():
                    try:
                        for _node, consumer in replica.consumers.items():
                            consumer.seen_at += 0  # a little Python work per consumer
                        replica.consumers_report()
                    except RuntimeError as exc:
                        errors.append(exc)
                    await asyncio.sleep(0)

            readers = [asyncio.create_task(iterate()) for _ in range(2)]
            for version in range(2, ROUNDS + 2):
                side = "a" if version % 2 else "b"  # every consumer leaves, others come
                await replicas.ensure("alpha", {"role": "primary", "epoch": 1,
                                                "version": version,
                                                "secondaries": peers(side)})
                assert set(replica.consumers) == {p["node"] for p in peers(side)}
            done.set()
            await asyncio.gather(*readers)
            assert errors == [], f"the loop's iteration broke: {errors[:3]}"
            assert table.foreign == [], f"consumers changed off the loop: {table.foreign[:3]}"
        finally:
            await replicas.close()

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        asyncio.run(scenario())
    finally:
        sys.setswitchinterval(interval)
