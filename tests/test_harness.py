"""The harness's own bookkeeping (`tandemdb.testing`), without a deployment: the integration
tests and benchmarks trust what it records and what its checks let through."""

from __future__ import annotations

import itertools
import threading

import httpx
import pytest

from tandemdb.client import TandemError
from tandemdb.testing import (
    IdWriter,
    NodeSender,
    PollTimeout,
    Refused,
    compare,
    holds_within,
    longest_gap,
    poll_until,
)


def test_poll_until_returns_the_first_true_value_and_names_what_it_waited_for():
    calls = itertools.count()
    assert poll_until(lambda: next(calls) >= 3 and "ready", timeout=5, interval=0) == "ready"
    with pytest.raises(PollTimeout, match=r"timed out after 0.05s waiting for the moon"):
        poll_until(lambda: False, timeout=0.05, interval=0.01, what="the moon")


def test_poll_until_timeout_is_a_runtime_error_for_the_cli():
    with pytest.raises(RuntimeError):
        poll_until(lambda: False, timeout=0)


def test_poll_until_lets_unexpected_errors_through_and_ignores_the_expected_ones():
    answers = iter([TandemError(503, "no_lease", "later"), TandemError(503, "x", "y"), 1])

    def check() -> int:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert poll_until(check, timeout=5, interval=0, ignore=(TandemError,)) == 1
    with pytest.raises(ZeroDivisionError):
        poll_until(lambda: 1 / 0, timeout=5, ignore=(TandemError,))
    assert not holds_within(lambda: (_ for _ in ()).throw(TandemError(0, "x", "y")), 0.02)


class FakeTandem:
    """Stands in for the SDK: answers writes by id, keeps the rows of each environment."""

    def __init__(self, stop_after: int) -> None:
        self.rows: dict[str, list[int]] = {}
        self.calls = 0
        self.stop_after = stop_after
        self.done = threading.Event()

    def sql(self, env: str, sql: str, params: list | None = None, **read: object) -> dict:
        if sql.startswith("SELECT"):
            ids = sorted(self.rows.get(env, []))
            return {"results": [{"rows": [[i] for i in ids]}]}
        if sql.startswith("CREATE"):
            return {"lsn": 0, "epoch": 1}
        self.calls += 1
        if self.calls >= self.stop_after:
            self.done.set()
        id_ = (params or [0])[0]
        if id_ % 5 == 0:
            raise Refused("no_lease")  # certainly not written
        if id_ % 7 == 0:
            self.rows.setdefault(env, []).append(id_)  # committed, but the answer was lost
            raise TandemError(0, "unavailable", "connection reset")
        self.rows.setdefault(env, []).append(id_)
        return {"lsn": self.calls, "epoch": 1 + (id_ > 20)}


def test_id_writer_records_acks_unknown_outcomes_and_refusals_per_environment():
    fake = FakeTandem(stop_after=40)
    writer = IdWriter(fake, ["a", "b"], first_id=3, step=2, stamp=False, error_pause=0)
    writer.start()
    assert fake.done.wait(10)
    writer.pause()
    written = fake.calls
    writer.resume()
    writer.stop()
    assert written >= 40
    ids = list(range(3, 3 + 2 * fake.calls, 2))
    assert [a.id for a in writer.acks] == [i for i in ids if i % 5 and i % 7]
    assert writer.unknown == [i for i in ids if i % 7 == 0 and i % 5]
    assert [r.id for r in writer.refusals] == [i for i in ids if i % 5 == 0]
    assert all(a.env == writer.env_of(a.id) for a in writer.acks)
    assert {writer.env_of(3), writer.env_of(5), writer.env_of(7)} == {"a", "b"}
    assert writer.env_of(3) == writer.env_of(7) == "a"
    assert writer.epochs == sorted(writer.epochs) and writer.epochs[-1] == 2
    assert writer.lsns == sorted(writer.lsns)
    assert sum(writer.acked_per_env().values()) == len(writer.acks)
    times = writer.ack_times()
    assert writer.longest_pause() == max(b - a for a, b in itertools.pairwise(times))
    assert writer.longest_gap(times[0], times[-1]) == writer.longest_pause()
    assert all(m.startswith(f"{writer.env_of(i)} id {i}: ") for i, m in writer.failed)
    first = writer.first_ack(2, 0.0)
    assert first is not None and first.id == min(a.id for a in writer.acks if a.epoch == 2)
    # Planned failover: every acknowledged id once, unknown ones may be there.
    assert writer.check(fake, env="a") == set(fake.rows["a"])
    fake.rows["b"].remove(writer.acked_ids("b").pop())
    with pytest.raises(AssertionError, match="acknowledged ids missing"):
        writer.check(fake, env="b")
    fake.rows["a"].append(fake.rows["a"][0])
    with pytest.raises(AssertionError, match="present twice"):
        writer.check(fake, env="a")
    fake.rows["a"] = sorted(set(fake.rows["a"]) | {writer.refusals[0].id})
    with pytest.raises(AssertionError, match="ids nobody wrote"):
        writer.check(fake, env="a")


def test_compare_after_a_forced_failover():
    assert compare({1, 2, 5}, {1, 2}, {5, 6}, {6})["equal"]
    assert not compare({1, 2, 5}, {1, 2}, set(), {5})["equal"]  # acknowledged, then gone


def test_longest_gap_counts_only_gaps_that_overlap_and_close():
    assert longest_gap([0.0, 1.0, 1.5, 4.0, 4.1], 1.6, 3.0) == 2.5
    assert longest_gap([0.0, 1.0], 0.5, 2.0) is None  # no ack after the end yet


def test_a_retargeted_node_sender_records_where_each_write_went():
    """A switchover driven by hand: the writer's node changes mid-run, and each
    acknowledgement names the node that gave it (a 409 is a refusal with its code)."""
    hosts: list[str] = []

    def node(request: httpx.Request) -> httpx.Response:
        hosts.append(request.url.host)
        if request.url.host == "fenced":
            return httpx.Response(409, json={"error": {"code": "fenced", "message": "no"}})
        return httpx.Response(200, json={"lsn": len(hosts), "epoch": 1, "results": []})

    sender = NodeSender("http://west", "secret", node="west-1")
    sender.http = httpx.Client(transport=httpx.MockTransport(node))
    writer = IdWriter(sender, "acme", stamp=False, error_pause=0).start()
    try:
        poll_until(lambda: writer.acked_on("west-1"), 5, 0.001)
        sender.retarget("http://fenced")
        poll_until(lambda: writer.refusals, 5, 0.001)
        sender.retarget("http://east", "east-1")
        poll_until(lambda: writer.acked_on("east-1"), 5, 0.001)
    finally:
        writer.stop()
    sent = {"west": "west-1", "east": "east-1"}
    assert [a.target for a in writer.acks] == [sent[hosts[a.id - 1]] for a in writer.acks]
    assert {r.code for r in writer.refusals} == {"fenced"}
    assert all(hosts[r.id - 1] == "fenced" for r in writer.refusals)
