"""Planned failover of one environment: the `environment.failover` operation.

The switchover of DESIGN §4 (docs/failover.md). E is the epoch before, L the old primary's
final lsn. Steps:

1. `hold`: in the transaction that records the operation, the environment becomes
   `switching` (the gateway holds calls to its primary) and the catalog records the old
   primary as `fenced`, so no heartbeat answer can turn it back into a primary.
2. `fence`: fence the old primary at E; it answers L.
3. `catch-up`: wait until the target has applied exactly L.
4. `promote`: record the decision (target primary at E+1), then promote the target with
   expected lsn L. The decision is the point of no return: a failure before it unfences the
   old primary at E (`settle`), a failure after it finishes the move.
5. `switch-routing`: the environment's primary region becomes the target's.
6. `reverse`: the old primary becomes a secondary of the new one.
7. `release`: the environment is active again; the gateway sends the held calls on.

A forced failover (the primary's region is lost) runs `hold`, `expire-lease` (the target
stops vouching for the old primary, then both its leases are waited out), `promote` at the
target's applied lsn (the fork point), `switch-routing` and `release`.

Every step is idempotent, so a controller killed at any point resumes the operation where it
stopped (invariant 7). A move back to the home region is a failback: same steps, events
`failback.*`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime
from typing import Any

from tandemdb.common.http import ApiError

from .bodies import EnvironmentFailover, parse
from .catalog import Catalog, EnvState, EnvType, Role, iso_now, not_found, record_key
from .events import Events, EventType
from .nodes import NodeClient, Reply
from .operations import Draft, Kind, Operation, Operations, OpState, Outcome, StepFailed
from .reconcile import Reconciler
from .region_rules import read_region, refuse_move, region_key
from .status import LiveStatus
from .store import Txn
from .topology import Topology

log = logging.getLogger("tandem.controller.failover")

FAILOVER = "environment.failover"
STEPS = ["hold", "fence", "catch-up", "promote", "switch-routing", "reverse", "release"]
# Forced (the primary's region is lost): no fence to ask, nothing to catch up from, no one
# to reverse replication to; the old primary stays `fenced` in the catalog.
FORCED_STEPS = ["hold", "expire-lease", "promote", "switch-routing", "release"]
LEASE_SLACK = 0.5  # waited past the lease ttl, on top of the node's own margin
CATCH_UP_TIMEOUT = 10.0  # the target must reach the final lsn within this (default)
FENCE_TIMEOUT = 35.0  # a fence waits up to 30 s for the commit in flight
PROMOTE_DEADLINE = 15.0  # retry an unanswered promote this long
CAS_ATTEMPTS = 20

EVENTS = {
    "failover": (EventType.FAILOVER_STARTED, EventType.FAILOVER_COMPLETED,
                 EventType.FAILOVER_FAILED),
    "failback": (EventType.FAILBACK_STARTED, EventType.FAILBACK_COMPLETED,
                 EventType.FAILBACK_FAILED),
}


def parse_request(raw: Any) -> tuple[str, float]:
    """`mode` and `catch_up_timeout` of a failover request body (`bodies.EnvironmentFailover`,
    {} when empty); 400 with what to fix."""
    body = parse(EnvironmentFailover, raw)
    return body.mode, float(body.catch_up_timeout)


def with_roles(record: dict, roles: dict[str, str]) -> list[dict]:
    """The record's replicas with the roles of the nodes in `roles` replaced."""
    return [{**r, "role": roles.get(r["node"], r["role"])} for r in record["replicas"]]


def parse_time(text: str) -> float:
    """Unix seconds of one of the records' ISO times."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def seconds_between(start: str, end: str) -> float:
    return round(parse_time(end) - parse_time(start), 3)


def summary(op: Operation) -> dict:
    """One environment's line in a region operation's result."""
    if op.state == OpState.SUCCEEDED and op.result and op.result.get("environments"):
        return op.result["environments"][0]
    p = op.params
    return {"environment": op.target, "from_region": p["from"]["region"],
            "to_region": p["to"]["region"], "state": op.state.value, "operation": op.id,
            "data_loss": 0, "epoch": p["epoch"],
            "error": (op.error or {}).get("message")}


class Failovers:
    def __init__(self, catalog: Catalog, topology: Topology, reconciler: Reconciler,
                 nodes: NodeClient, operations: Operations, events: Events,
                 status: LiveStatus, lease_ttl: float) -> None:
        self.catalog, self.topology, self.reconciler = catalog, topology, reconciler
        self.nodes, self.operations, self.events = nodes, operations, events
        self.status, self.lease_ttl = status, lease_ttl
        self.store = catalog.store
        operations.register(Kind(FAILOVER, self._step, self._settle))

    # -- starting ------------------------------------------------------------------------

    def start(self, name: str, mode: str = "planned", parent: str | None = None,
              catch_up_timeout: float = CATCH_UP_TIMEOUT) -> Operation:
        """Record the operation and hold the environment (step 1). Blocking; raises
        `ApiError` (and changes nothing) when the environment cannot fail over now.

        Just after a controller start it first waits (a few heartbeat intervals at most)
        until the health of the environment's nodes is known."""
        self._await_health(name)

        def build(txn: Txn, op_id: str) -> Draft:
            item = self.store.get(record_key(name))
            if item is None:
                raise not_found(name)
            record = item.value
            source, target = self._check(record, mode)
            reason = "failback" if target["region"] == record["home_region"] else "failover"
            into, state = read_region(self.store, target["region"])
            refusal = refuse_move(name, target["region"], state, failback=reason == "failback",
                                  forced=mode == "forced")
            if refusal is not None:
                raise refusal
            # A region operation that changes the target's state in between makes this
            # transaction fail, and the next attempt reads the new state.
            txn.expect(region_key(target["region"]), into.version if into else None)
            replicas = with_roles(record, {source["node"]: Role.FENCED.value})
            if mode == "forced":  # its writes past the fork point are not the new history
                replicas = [{**r, "behind": True} if r["node"] == source["node"] else r
                            for r in replicas]
            held = {**record, "state": EnvState.SWITCHING.value, "operation": op_id,
                    "replicas": replicas}
            txn.expect(record_key(name), item.version).put(record_key(name), held)
            epoch = record["epoch"]
            self.events.stage(txn, EVENTS[reason][0], environment=name,
                              region=source["region"], operation=op_id,
                              data={"from_region": source["region"],
                                    "to_region": target["region"], "epoch": epoch,
                                    "mode": mode})
            params = {"environment": name, "mode": mode, "reason": reason, "epoch": epoch,
                      "from": {"node": source["node"], "region": source["region"]},
                      "to": {"node": target["node"], "region": target["region"]},
                      "catch_up_timeout": catch_up_timeout, "parent": parent}
            if mode == "forced":  # what the primary was last seen at: the loss is against it
                seen = self.status.report(source["node"], name) or {}
                params.update(lease_ttl=self.lease_ttl,
                              primary_last_seen_lsn=seen.get("last_lsn"))
            detail = (f"environment {name} (epoch {epoch}): {mode} {reason} from "
                      f"{source['region']} to {target['region']} started; calls to the "
                      f"primary are held and the catalog records {source['node']} as fenced")
            steps = FORCED_STEPS if mode == "forced" else STEPS
            return Draft(params, steps, {"hold": detail})

        return self.operations.create(FAILOVER, name, build)

    def _await_health(self, name: str) -> None:
        """Wait until the health of the environment's nodes is known (see Topology)."""
        item = self.store.get(record_key(name))
        nodes = [r["node"] for r in item.value["replicas"]] if item else []
        began = time.monotonic()
        healths = self.topology.wait_known(nodes)
        waited = time.monotonic() - began
        if waited >= 0.05:
            log.info("environment %s: waited %.2f s for its nodes' first heartbeats since the "
                     "controller started before checking them (%s)", name, waited,
                     ", ".join(f"{node} {health.value}" for node, health in healths.items()))

    def _check(self, record: dict, mode: str) -> tuple[dict, dict]:
        """The primary and the replica to promote; 409 when a failover cannot start."""
        name = record["name"]
        if record["state"] != EnvState.ACTIVE:
            raise ApiError(409, "busy", f"environment {name!r} is {record['state']} (operation "
                           f"{record.get('operation')}); wait for that operation to end: "
                           f"tandem ops {record.get('operation')}")
        source = next((r for r in record["replicas"] if r["role"] == Role.PRIMARY), None)
        target = next((r for r in record["replicas"] if r["role"] == Role.SECONDARY), None)
        behind = next((r for r in record["replicas"] if r.get("behind")), None)
        if target is None and behind is not None:
            raise ApiError(409, "no_secondary", f"environment {name!r}: its replica in "
                           f"{behind['region']} is fenced since a forced failover and holds "
                           "writes past the fork point; it must be rewound before it can "
                           "become a secondary again (not built yet)")
        if record["type"] != EnvType.PRODUCTION or source is None or target is None:
            raise ApiError(409, "no_secondary", f"environment {name!r} is {record['type']} and "
                           "has no geo-secondary to fail over to; only production environments "
                           "can fail over")
        if mode == "forced" and self.lease_ttl <= 0:
            raise ApiError(409, "no_leases", "this deployment runs without leases "
                           "(lease_ttl 0), so an old primary cannot be known to have stopped; "
                           "a forced failover needs them")
        checked = [(target, "secondary")] if mode == "forced" else [(source, "primary"),
                                                                     (target, "secondary")]
        for replica, what in checked:
            if not self.topology.healthy(replica["node"]):
                raise ApiError(409, "unhealthy", f"environment {name!r}: the node of its "
                               f"{what} ({replica['node']} in {replica['region']}) has not "
                               f"heartbeated lately; a {mode} failover needs it up"
                               + ("" if mode == "forced" else " (if the primary's region is "
                                  "lost, use a forced failover)"))
        return source, target

    # -- steps ---------------------------------------------------------------------------

    async def _step(self, op: Operation, step: str) -> Outcome:
        p, name = op.params, op.target
        epoch, source, target = p["epoch"], p["from"], p["to"]
        where = f"environment {name} (epoch {epoch})"
        if step == "hold":  # done in the creating transaction; seen again only on resume
            return Outcome(f"{where}: calls to the primary are held")
        if step == "expire-lease":
            return await self._expire_lease(op)
        if step == "promote" and p["mode"] == "forced":
            return await self._promote_forced(op)
        if step == "fence":
            item = await self._record(op)
            reply = await self._call(source, name, "fence",
                                     {"epoch": epoch, "version": item.version}, FENCE_TIMEOUT)
            if not reply.ok:
                raise StepFailed("fence_failed", f"{where}: could not fence the primary: "
                                                 f"{reply.problem}")
            final = int(reply.body["final_lsn"])
            return Outcome(f"{where}: primary on {source['node']} fenced at final lsn {final}; "
                           "it takes no more writes", result={"final_lsn": final})
        final = (op.result or {})["final_lsn"]
        if step == "catch-up":
            timeout = p["catch_up_timeout"]
            reply = await self._call(target, name, "wait", {"lsn": final, "timeout": timeout},
                                     timeout + 5)
            if not reply.ok:
                code = "catch_up_timeout" if reply.code == "lsn_not_reached" else "catch_up_failed"
                raise StepFailed(code, f"{where}: the secondary on {target['node']} did not "
                                       f"reach the final lsn {final}: {reply.problem}")
            return Outcome(f"{where}: secondary on {target['node']} has applied the final lsn "
                           f"{final}, no more and no less")
        if step == "promote":
            version = await self._decide(op)
            await self._promote(op, final, version)
            return Outcome(f"environment {name} (epoch {epoch + 1}): {target['node']} promoted "
                           f"to primary at epoch {epoch + 1} from lsn {final}",
                           result={"epoch": epoch + 1})
        if step == "switch-routing":
            item = await self._record(op)
            record = item.value

            switched = {**record, "primary_region": target["region"]}
            if p["mode"] == "forced":  # where the old primary's history forked off
                switched["replicas"] = [{**r, "fork_lsn": final} if r.get("behind") else r
                                        for r in record["replicas"]]

            def switch(txn: Txn) -> None:
                txn.expect(record_key(name), item.version).put(record_key(name), switched)

            return Outcome(f"environment {name} (epoch {epoch + 1}): routing now sends its "
                           f"primary calls to {target['region']}", switch)
        if step == "reverse":
            problem = await self._reverse(op)
            detail = (f"environment {name} (epoch {epoch + 1}): {source['node']} is now a "
                      f"secondary of {target['node']}; replication runs "
                      f"{target['region']} -> {source['region']}")
            if problem:
                detail += f" ({problem}; its heartbeat answer tells it when it is back)"
            return Outcome(detail, warn=bool(problem))
        if step == "release":
            return await self._release(op, final)
        raise StepFailed("unknown_step", f"{FAILOVER} has no step {step!r}")

    async def _call(self, replica: dict, env: str, action: str, body: dict,
                    timeout: float) -> Reply:
        url = self.topology.call_url(replica["node"])
        return await self.nodes.replica_call(replica["node"], url, env, action, body, timeout)

    async def _record(self, op: Operation):
        """The environment's record, still held by this operation; StepFailed if not."""
        item = await asyncio.to_thread(self.store.get, record_key(op.target))
        if item is None:
            raise StepFailed("deleted", f"environment {op.target!r} was deleted during its "
                                        "failover")
        if item.value.get("operation") != op.id:
            raise StepFailed("conflict", f"environment {op.target!r} was changed by operation "
                                         f"{item.value.get('operation')} during this failover")
        return item

    async def _decide(self, op: Operation) -> int:
        """Record target-primary-at-E+1 in the catalog: the point of no return. Answers
        the record's version."""
        epoch, target = op.params["epoch"], op.params["to"]
        for _ in range(CAS_ATTEMPTS):
            item = await self._record(op)
            record = item.value
            if record["epoch"] == epoch + 1:
                return item.version  # decided already (a resumed step)
            decided = {**record, "epoch": epoch + 1,
                       "replicas": with_roles(record, {target["node"]: Role.PRIMARY.value})}
            version = await asyncio.to_thread(self.catalog.try_update, op.target, item.version,
                                              decided)
            if version is not None:
                log.info("environment %s (epoch %d): decided, %s becomes primary at epoch %d; "
                         "from here the failover only goes forward (%s)", op.target,
                         epoch + 1, target["node"], epoch + 1, op.id)
                return version
        raise StepFailed("conflict", f"environment {op.target!r}: the decision lost its "
                                     f"compare-and-set {CAS_ATTEMPTS} times")

    async def _promote(self, op: Operation, final: int, version: int) -> None:
        p = op.params
        body = {"epoch": p["epoch"] + 1, "expected_lsn": final, "version": version,
                "secondaries": [self.topology.node_ref(p["from"]["node"])]}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PROMOTE_DEADLINE
        while True:
            reply = await self._call(p["to"], op.target, "promote", body, 5.0)
            if reply.ok:
                return
            if 400 <= reply.status < 500 or loop.time() >= deadline:
                raise StepFailed("promote_failed", f"environment {op.target} (epoch "
                                 f"{p['epoch'] + 1}): {reply.problem}")
            await asyncio.sleep(0.2)

    async def _expire_lease(self, op: Operation) -> Outcome:
        """Wait until the old primary's leases have certainly run out; only then may
        another replica take writes (invariant 2).

        Two leases: the controller's, which no heartbeat answer after the hold extends to a
        writable primary (they make it fenced first), and the failsafe lease its
        geo-secondary's pulls keep. So the target is first told to stop vouching (its
        desired record, as of the hold, says so) and must confirm; then the wait is
        `lease_ttl` + slack from the later of the hold and that confirmation
        (docs/leases.md)."""
        p, name = op.params, op.target
        target = p["to"]
        withdrawn = await self._withdraw_vouch(op)
        since = max(parse_time(op.started_at), withdrawn)
        wait = since + p["lease_ttl"] + LEASE_SLACK - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        return Outcome(f"environment {name} (epoch {p['epoch']}): the leases of "
                       f"{p['from']['node']} have run out ({p['lease_ttl']:g} s ttl, waited "
                       f"{max(wait, 0):.2f} s after {target['node']} stopped vouching for it); "
                       f"it cannot take writes at epoch {p['epoch']}")

    async def _withdraw_vouch(self, op: Operation) -> float:
        """Tell the target to stop vouching for the old primary; when it confirmed (unix s).
        It keeps pulling what the old primary still commits, so the fork point is late."""
        name, target = op.target, op.params["to"]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PROMOTE_DEADLINE
        while True:
            item = await self._record(op)
            replica = next(r for r in item.value["replicas"] if r["node"] == target["node"])
            desired = self.reconciler.desired(item.value, replica, item.version)
            reply = await self.nodes.put_replica(target["node"],
                                                 self.topology.call_url(target["node"]),
                                                 desired)
            record = reply.body.get("record") if reply.ok else None
            if isinstance(record, dict) and record.get("vouch") is False:
                return time.time()
            problem = reply.problem or f"its record still vouches: {record!r}"
            if loop.time() >= deadline:
                raise StepFailed("vouch_not_withdrawn", f"environment {name}: the secondary "
                                 f"on {target['node']} did not confirm that it stopped "
                                 f"vouching for the old primary: {problem}")
            await asyncio.sleep(0.2)

    async def _promote_forced(self, op: Operation) -> Outcome:
        """Promote the secondary at whatever it has applied: that lsn is the fork point."""
        p, name = op.params, op.target
        version = await self._decide(op)
        body = {"epoch": p["epoch"] + 1, "version": version, "secondaries": []}
        for _ in range(CAS_ATTEMPTS):
            seen = await self._call(p["to"], name, "wait", {"lsn": 0, "timeout": 0}, 5.0)
            if not seen.ok:
                raise StepFailed("promote_failed", f"environment {name}: cannot read the "
                                                   f"secondary's position: {seen.problem}")
            fork = int(seen.body["applied_lsn"])
            reply = await self._call(p["to"], name, "promote",
                                     {**body, "expected_lsn": fork}, 5.0)
            if reply.ok:
                break
            if reply.code != "lsn_mismatch":  # (a mismatch: it was still applying)
                raise StepFailed("promote_failed", f"environment {name} (epoch "
                                                   f"{p['epoch'] + 1}): {reply.problem}")
        else:
            raise StepFailed("promote_failed", f"environment {name}: the secondary kept "
                                               "applying; no stable fork point")
        last_seen = p.get("primary_last_seen_lsn")
        lost = max(0, last_seen - fork) if isinstance(last_seen, int) else None
        committed_at = seen.body.get("last_committed_at")
        window = (round(max(0.0, parse_time(op.started_at) - committed_at), 3)
                  if isinstance(committed_at, int | float) else None)
        known = ("unknown (the old primary never reported)" if lost is None
                 else f"at most {lost} entries")
        return Outcome(f"environment {name} (epoch {p['epoch'] + 1}): {p['to']['node']} "
                       f"promoted at its applied lsn {fork}, the fork point; writes of the "
                       f"old primary after it may be lost: {known}",
                       result={"final_lsn": fork, "fork_lsn": fork, "epoch": p["epoch"] + 1,
                               "lost_entries": lost, "lost_seconds": window,
                               "primary_last_seen_lsn": last_seen})

    async def _reverse(self, op: Operation) -> str | None:
        """Make the old primary a secondary of the new one: catalog first, then its node."""
        source = op.params["from"]
        for _ in range(CAS_ATTEMPTS):
            item = await self._record(op)
            record, version = item.value, item.version
            roles = {r["node"]: r["role"] for r in record["replicas"]}
            if roles.get(source["node"]) == Role.SECONDARY:
                break
            reversed_ = {**record, "replicas": with_roles(
                record, {source["node"]: Role.SECONDARY.value})}
            version = await asyncio.to_thread(self.catalog.try_update, op.target,
                                              item.version, reversed_)
            if version is not None:
                record = reversed_
                break
        else:
            raise StepFailed("conflict", f"environment {op.target!r}: reversing replication "
                                         f"lost its compare-and-set {CAS_ATTEMPTS} times")
        replica = next(r for r in record["replicas"] if r["node"] == source["node"])
        outcome = await self.nodes.put_replica(source["node"],
                                               self.topology.call_url(source["node"]),
                                               self.reconciler.desired(record, replica,
                                                                       version))
        return outcome.problem

    async def _release(self, op: Operation, final: int) -> Outcome:
        p, name = op.params, op.target
        item = await self._record(op)
        record, epoch = item.value, p["epoch"] + 1
        released_at = iso_now()
        forced = p["mode"] == "forced"
        result = op.result or {}
        line = {"environment": name, "from_region": p["from"]["region"],
                "to_region": p["to"]["region"], "state": "succeeded", "mode": p["mode"],
                "rto_seconds": seconds_between(op.started_at, released_at),
                "data_loss": result.get("lost_entries") if forced else 0,
                "final_lsn": final, "epoch": epoch, "operation": op.id}
        if forced:
            line.update(fork_lsn=final, lost_seconds=result.get("lost_seconds"))

        def release(txn: Txn) -> None:
            txn.expect(record_key(name), item.version).put(
                record_key(name), {**record, "state": EnvState.ACTIVE.value})
            self.events.stage(txn, EVENTS[p["reason"]][1], environment=name,
                              region=p["to"]["region"], operation=op.id,
                              data={k: v for k, v in line.items()
                                    if k not in ("environment", "operation", "state")})
            if forced:
                self.events.stage(txn, EventType.FAILOVER_DATA_LOSS, environment=name,
                                  region=p["from"]["region"], operation=op.id, data={
                                      "fork_lsn": final, "epoch": epoch,
                                      "lost_entries_known": result.get("lost_entries"),
                                      "lost_seconds_known": result.get("lost_seconds"),
                                      "primary_last_seen_lsn":
                                          result.get("primary_last_seen_lsn")})

        loss = (f"writes after lsn {final} may be lost ({line['data_loss']} entries at most)"
                if forced else f"no data lost (final lsn {final})")
        return Outcome(f"environment {name} (epoch {epoch}): active again with its primary in "
                       f"{p['to']['region']}; held calls released after {line['rto_seconds']:.3f}"
                       f" s, {loss}", release,
                       {"environments": [line], "succeeded": 1, "failed": 0})

    # -- failure -------------------------------------------------------------------------

    async def _settle(self, op: Operation, step: str, message: str) -> str:
        """Leave the environment with exactly one writable primary after a failed step."""
        p, name = op.params, op.target
        epoch, source, target = p["epoch"], p["from"], p["to"]
        for _ in range(CAS_ATTEMPTS):
            item = await asyncio.to_thread(self.store.get, record_key(name))
            if item is None:
                return "the environment no longer exists"
            record = item.value
            if record.get("operation") != op.id:
                return (f"the environment was changed by operation {record.get('operation')}; "
                        "left as that operation leaves it")
            decided = record["epoch"] == epoch + 1
            forced = p["mode"] == "forced"
            if decided:  # past the point of no return: finish the move
                roles = {target["node"]: Role.PRIMARY.value,
                         source["node"]: (Role.FENCED if forced else Role.SECONDARY).value}
                settled = {**record, "state": EnvState.ACTIVE.value,
                           "primary_region": target["region"],
                           "replicas": with_roles(record, roles)}
                outcome = "moved"
            else:  # not decided: the old primary takes writes again at its old epoch
                back = [{k: v for k, v in r.items() if k != "behind"}
                        for r in with_roles(record, {source["node"]: Role.PRIMARY.value})]
                settled = {**record, "state": EnvState.ACTIVE.value, "replicas": back}
                outcome = "rolled back"

            def stage(txn: Txn, item=item, settled=settled, outcome=outcome) -> None:
                txn.expect(record_key(name), item.version).put(record_key(name), settled)
                self.events.stage(txn, EVENTS[p["reason"]][2], environment=name,
                                  region=source["region"], operation=op.id,
                                  data={"from_region": source["region"],
                                        "to_region": target["region"], "step": step,
                                        "outcome": outcome, "error": message,
                                        "epoch": settled["epoch"], "data_loss": 0})

            done = await asyncio.to_thread(self.events.transact, stage)
            if done is not None:
                version = done[1][record_key(name)]
                break
        else:
            raise RuntimeError(f"environment {name}: settling the failed failover lost its "
                               f"compare-and-set {CAS_ATTEMPTS} times; it runs again at the "
                               "next start")
        if decided and forced:
            return (f"the move was already decided, so it was finished: primary on "
                    f"{target['node']} at epoch {epoch + 1}; {source['node']} stays fenced")
        if decided:
            replica = next(r for r in settled["replicas"] if r["node"] == source["node"])
            await self.nodes.put_replica(source["node"], self.topology.call_url(source["node"]),
                                         self.reconciler.desired(settled, replica, version))
            return (f"the move was already decided, so it was finished: primary on "
                    f"{target['node']} at epoch {epoch + 1}, {source['node']} its secondary")
        reply = await self._call(source, name, "unfence", {"epoch": epoch, "version": version},
                                 5.0)
        if reply.ok:
            return (f"the primary on {source['node']} was unfenced and takes writes again at "
                    f"epoch {epoch}; nothing was lost")
        return (f"the catalog makes {source['node']} primary again at epoch {epoch}; it could "
                f"not be told now ({reply.problem}), its heartbeat answer will unfence it")
