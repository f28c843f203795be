"""Lease arithmetic (docs/leases.md) with an injected clock: no sleeping, no timing races.

The refusal itself is checked on a real replica set in-process: a primary without a lease
(or outside its current epoch) refuses writes with 503 `no_lease`, secondaries keep their
409."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tandemdb.common.deployment import Deployment
from tandemdb.common.http import ApiError
from tandemdb.node.app import Node
from tandemdb.node.heartbeat import Heartbeat
from tandemdb.node.lease import Lease, margin_for, usable_ttl
from tandemdb.testing import plan

from .conftest import Clock, node_in_process


def test_margin_is_half_a_second_or_a_tenth_capped_at_half_the_ttl() -> None:
    assert margin_for(5.0) == 0.5
    assert margin_for(30.0) == 3.0
    assert margin_for(1.5) == 0.5
    assert margin_for(0.6) == 0.3  # a test's tiny ttl keeps half of itself


def test_lease_counts_from_the_send_time_minus_the_margin() -> None:
    clock = Clock()
    lease = Lease(5.0, clock)
    assert lease.required and not lease.valid() and lease.remaining() is None
    assert "never granted" in lease.describe()
    assert "has not answered" in lease.describe()

    sent_at = clock.now
    clock.now += 0.3  # the answer arrives later; the lease still counts from sent_at
    assert lease.grant(sent_at, 5.0) == sent_at + 4.5
    assert lease.valid() and lease.remaining() == pytest.approx(4.2)

    clock.now = sent_at + 4.49
    assert lease.valid()
    clock.now = sent_at + 4.5  # expiry is exclusive: at sent_at + ttl - margin it is over
    assert not lease.valid() and lease.remaining() == 0.0
    clock.now = sent_at + 6.5
    text = lease.describe()
    assert "expired 2.0 s ago" in text and "ttl 5 s" in text and "margin 0.5 s" in text


def test_a_new_grant_replaces_the_old_one_even_when_shorter() -> None:
    clock = Clock()
    lease = Lease(5.0, clock)
    lease.grant(clock.now, 5.0)
    clock.now += 1.0
    lease.grant(clock.now, 1.5)  # a restarted controller now promises 1.5 s only
    assert lease.expires_at == clock.now + 1.0
    clock.now += 1.0
    assert not lease.valid()


def test_ttl_zero_turns_leases_off() -> None:
    lease = Lease(0, Clock())
    assert not lease.required and lease.valid() and lease.remaining() is None


@pytest.mark.parametrize("raw, ttl", [({"ttl": 5}, 5.0), ({"ttl": 1.5}, 1.5),
                                      ({"ttl": 0}, None), ({"ttl": -1}, None),
                                      ({"ttl": "5"}, None), ({"ttl": True}, None),
                                      ({"ttl": float("inf")}, None), ({}, None), (None, None)])
def test_only_a_positive_finite_ttl_grants(raw: object, ttl: float | None) -> None:
    assert usable_ttl(raw) == ttl


@pytest.mark.parametrize("bad", [-1, "5", None, float("nan"), True])
def test_deployment_refuses_a_bad_lease_ttl(tmp_path: Path, bad: object) -> None:
    dep = plan(tmp_path)
    fields = dict(dep.__dict__)
    fields["lease_ttl"] = bad
    with pytest.raises(ValueError, match="lease_ttl"):
        Deployment(**fields)


def test_heartbeat_answers_renew_from_the_send_time(tmp_path: Path) -> None:
    dep = plan(tmp_path, lease_ttl=2.0)
    clock = Clock()

    async def scenario() -> None:
        node = Node(dep, "west-1")
        node.lease.clock = clock
        beat = Heartbeat(node)
        try:
            beat.renew({"ttl": 2.0}, sent_at=clock.now - 0.2)
            assert node.lease.remaining() == pytest.approx(1.3)  # 2.0 - 0.5 - 0.2
            clock.now += 5
            beat.renew({"nothing": True}, sent_at=clock.now)  # no grant: stays expired
            assert not node.lease.valid()
            report = await beat.report()
            assert report["lease_remaining"] == 0.0
        finally:
            await beat.close()

    asyncio.run(scenario())


def test_write_refusals_of_the_replica_set(tmp_path: Path) -> None:
    dep = plan(tmp_path)
    clock = Clock()

    async def scenario() -> None:
        async with node_in_process(dep, clock) as node:
            replicas, gate = node.replicas, node.gate
            primary = await replicas.ensure("alpha", {"role": "primary", "epoch": 1})
            gamma = await replicas.ensure("gamma", {"role": "primary", "epoch": 1})
            secondary = await replicas.ensure("beta", {
                "role": "secondary", "epoch": 1,
                "primary": {"node": "east-1", "region": "east", "url": "http://x"}})

            with pytest.raises(ApiError) as refused:
                gate.check(primary)
            err = refused.value
            assert (err.status, err.code, err.headers) == (503, "no_lease",
                                                           {"Retry-After": "1"})
            assert "never granted" in err.message and "reads are still served" in err.message
            assert not gate.may_write(primary)
            with pytest.raises(ApiError) as not_primary:
                gate.check(secondary)
            assert not_primary.value.code == "not_primary"

            node.lease.grant(clock.now, 5.0)
            gate.check(primary)
            assert gate.may_write(primary)

            # Its data has seen a newer epoch than its record: not its current epoch.
            await asyncio.to_thread(primary.env.observe_epoch, 2)
            assert primary.record.epoch == 1
            with pytest.raises(ApiError) as stale:
                gate.check(primary)
            assert stale.value.code == "no_lease" and "epoch 2" in stale.value.message

            clock.now += 10  # gamma is in its epoch, but the lease has run out
            with pytest.raises(ApiError) as expired:
                gate.check(gamma)
            assert expired.value.code == "no_lease"
            assert "expired 5.5 s ago" in expired.value.message

    asyncio.run(scenario())


def test_a_vouch_grants_from_the_token_time_and_only_for_our_tokens() -> None:
    """The failsafe counts from when the primary made the token its secondary echoes, so
    a pull delivered late (a slow link) grants nothing past what the secondary promised."""
    clock = Clock()
    lease = Lease(5.0, clock)
    token = lease.token()
    clock.now += 3.0  # the echo arrives much later: the expiry still counts from the token
    assert lease.vouched_until(token) == token[1] + 4.5
    assert lease.vouched_until([token[0], clock.now + 1.0]) is None  # from the future
    assert lease.vouched_until(["another-process", token[1]]) is None  # a restarted node's
    for bad in (None, [], [token[0]], [token[0], "1000"], [token[0], 1000], "x", {"t": 1.0}):
        assert lease.vouched_until(bad) is None, bad
    assert Lease(0, clock).vouched_until(token) is None  # leases off: nothing to extend
    assert "no geo-secondary has vouched" in lease.describe_failsafe(0.0)
    assert "ended 1.5 s ago" in lease.describe_failsafe(clock.now - 1.5)
    assert "for 2.0 s more" in lease.describe_failsafe(clock.now + 2.0)


def test_the_failsafe_lets_a_primary_write_while_its_geo_secondary_vouches(
        tmp_path: Path) -> None:
    dep = plan(tmp_path)
    clock = Clock()
    east = {"node": "east-1", "region": "east", "url": "http://east"}
    local = {"node": "west-9", "region": "west", "url": "http://west-9"}

    async def scenario() -> None:
        async with node_in_process(dep, clock) as node:
            replicas, gate, lease = node.replicas, node.gate, node.lease
            primary = await replicas.ensure("alpha", {"role": "primary", "epoch": 1,
                                                      "secondaries": [east, local]})
            fenced = await replicas.ensure("beta", {"role": "fenced", "epoch": 1,
                                                    "secondaries": [east]})
            assert not gate.may_write(primary)  # no controller lease, no vouch yet

            token = lease.token()
            assert not gate.vouch(primary, "east-1", 2, token)  # not its epoch
            assert not gate.vouch(primary, "west-9", 1, token)  # not geo: same region
            assert not gate.vouch(primary, "north-1", 1, token)  # not its secondary
            assert not gate.vouch(fenced, "east-1", 1, token)  # fenced stays fenced
            assert not gate.may_write(primary)

            clock.now += 1.0
            assert gate.vouch(primary, "east-1", 1, token)
            assert primary.failsafe_until == token[1] + 4.5
            gate.check(primary)  # no controller lease: the failsafe holds
            assert not gate.vouch(primary, "east-1", 1, token)  # an echo extends once

            clock.now = token[1] + 4.5  # the secondary stopped pulling: over
            with pytest.raises(ApiError) as refused:
                gate.check(primary)
            assert refused.value.code == "no_lease"
            assert "failsafe lease ended 0.0 s ago" in refused.value.message
            with pytest.raises(ApiError):
                gate.check(fenced)

            # Outside its epoch the failsafe does not help either.
            assert gate.vouch(primary, "east-1", 1, lease.token())
            gate.check(primary)
            await asyncio.to_thread(primary.env.observe_epoch, 2)
            with pytest.raises(ApiError) as stale:
                gate.check(primary)
            assert stale.value.code == "no_lease" and "epoch 2" in stale.value.message

    asyncio.run(scenario())
