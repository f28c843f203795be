"""`tandem demo`, last part: the home region is lost without warning, and comes back.

Nobody calls a failover here. While a writer writes unique ids into one environment, the
west node is SIGKILLed; the controller notices, waits out `grace_seconds` and forces the
region over to east by itself. When west returns, its old primaries rejoin and keep the
writes the failover lost. The demo checks that those are exactly the acknowledged ids east
lacks (give or take writes whose answer never came), replays them, and fails back home:
at the end every acknowledged id is there, once.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterable

from rich.console import Console
from rich.table import Table

from tandemdb.bench.failover import (
    CREATE,
    HOME,
    PAIR,
    TABLE,
    compare,
    data_loss_events,
    ids_in,
    lost_writes,
    region,
    rejoined,
    seconds_since,
)
from tandemdb.bench.switchover import wait_replicated
from tandemdb.client import Client, TandemError
from tandemdb.client.operations import max_rto_seconds
from tandemdb.local import LocalDeployment
from tandemdb.testing import IdWriter, holds_within

EN_DASH = "\u2013"  # between the ends of a range of ids
GRACE_SECONDS, LEASE_TTL = 2.0, 1.5  # short, so that the demo does not wait 30 s
WRITE_BEFORE_SECONDS = 1.0
# East is paused (SIGSTOP) this long just before west dies, so that it is behind, as under
# a burst of writes: then the failover loses a few dozen writes instead of zero or one.
HOLD_EAST_SECONDS = 0.3
# A row changed in west while east is held back (so lost) and again in east after the
# failover, the same column: the replay must leave it alone and say why. (Replay compares
# the columns a write changed: a change to another column of the row would be merged.)
CONFLICT = ("orders", 1)
WAIT_SECONDS = 40.0
OK, BAD = "[green]✓[/green]", "[red]✗[/red]"


def run_outage(client: Client, cluster: LocalDeployment, console: Console, env: str,
               fleet: list[str]) -> dict:
    """Lose west under a writer into `env`, see it forced over, bring it back, compare the
    lost writes with the acknowledged ids east lacks, replay them, fail back."""
    deployment = cluster.deployment
    client.sql(env, CREATE)
    wait_replicated(client, set(fleet), timeout=30)
    epoch = client.environment(env)["epoch"]
    writer = IdWriter(Client(deployment.gateway_url, deployment.token), env, table=TABLE,
                      owns_sender=True).start()
    console.print(f"unplanned: a writer writes unique ids into {env}; then {HOME} is lost "
                  f"without warning (SIGKILL), grace {deployment.grace_seconds:g} s, lease "
                  f"{deployment.lease_ttl:g} s")
    report: dict = {}
    try:
        time.sleep(WRITE_BEFORE_SECONDS)
        east = deployment.nodes_in(PAIR)
        for node in east:
            cluster.signal(node, signal.SIGSTOP)
        table, key = CONFLICT
        _try(console, client, env, f"UPDATE {table} SET qty = qty + 100 WHERE id = ?", [key])
        time.sleep(HOLD_EAST_SECONDS)
        killed_wall, killed = time.time(), time.monotonic()
        try:
            for node in deployment.nodes_in(HOME):
                cluster.kill(node)
        finally:
            for node in east:
                cluster.signal(node, signal.SIGCONT)
        console.print(f"1. {HOME} is down: {', '.join(deployment.nodes_in(HOME))} killed "
                      f"({PAIR} was held back {HOLD_EAST_SECONDS:g} s before, so it is behind;"
                      f" meanwhile {table} {key} was updated in {HOME})")
        with console.status(f"the controller waits {deployment.grace_seconds:g} s before "
                            f"declaring {HOME} down"):
            over = holds_within(lambda: region(client, HOME)["state"] == "failed-over",
                                WAIT_SECONDS)
            holds_within(lambda: writer.first_ack(epoch + 1, killed) is not None, WAIT_SECONDS)
            time.sleep(0.5)  # a few writes in east
        # Someone changes the same row in east: the lost update of it now conflicts.
        if over:
            _try(console, client, env, f"UPDATE {table} SET qty = 7 WHERE id = ?", [key])
    finally:
        writer.stop()
    report.update(_forced(client, console, env, over, killed, killed_wall, writer, epoch))
    if not over:  # nothing more to check: bring west back for a clean stop
        for node in deployment.nodes_in(HOME):
            cluster.start(node)
        return {**report, "outage_ok": False}
    console.print(f"   then {table} {key} is changed in {PAIR} too (qty = 7): replaying its "
                  "lost update would overwrite that")
    found = ids_in(client, env)  # east, before west returns

    for node in deployment.nodes_in(HOME):
        cluster.start(node)
    with console.status(f"{HOME} is back: its old primaries rejoin"):
        back = holds_within(lambda: rejoined(client, fleet), WAIT_SECONDS, 0.2)
    console.print(f"3. {OK if back else BAD} {HOME} is back; "
                  + (f"its replicas rejoined as secondaries (lost writes kept: tandem lost "
                     f"{env})" if back else f"its replicas did not rejoin in {WAIT_SECONDS:g} s"))
    report.update(_lost(client, console, env, epoch + 1, writer, found,
                        report.get("outage_lost_entries_known")), outage_rejoined=back)
    report.update(_replay(client, console, env))
    report.update(_failback(client, console, env, writer, back))
    report["outage_ok"] = bool(back and report["outage_failed_over"]
                               and report["outage_replay_ok"] is not False
                               and report["outage_lost_equals_acked_missing"]
                               and report["outage_failback_state"] == "succeeded"
                               and report["outage_final_ok"])
    return report


def _forced(client: Client, console: Console, env: str, over: bool, killed: float,
            killed_wall: float, writer: IdWriter, epoch: int) -> dict:
    """What the controller did by itself: the operation, the data-loss event, writes again."""
    op_id = region(client, HOME).get("operation")
    op = client.operation(op_id) if op_id else {}
    down = seconds_since(op.get("started_at"), killed_wall)
    done = seconds_since(op.get("finished_at"), killed_wall)
    result = op.get("result") or {}
    console.print(f"2. {OK if over else BAD} {HOME} declared down after {_s(down)} and failed "
                  f"over by force: {op.get('kind')} {op_id} (mode "
                  f"{(op.get('params') or {}).get('mode')}) {op.get('state')} after {_s(done)}, "
                  f"{result.get('succeeded', '?')} environment(s) now in {PAIR}")
    loss = data_loss_events(client).get(env)
    data = (loss or {}).get("data", {})
    if loss:
        console.print(f"   event {loss['type']} {env}: fork lsn {data.get('fork_lsn')}, "
                      f"lost_entries_known {data.get('lost_entries_known')} (lsn "
                      f"{data.get('primary_last_seen_lsn')} in {HOME}'s last heartbeat minus "
                      f"the fork: later writes are not counted), lost_seconds_known "
                      f"{data.get('lost_seconds_known')}")
    first = writer.first_ack(epoch + 1, killed)
    writable = None if first is None else round(first.at - killed, 3)
    console.print(f"   {OK if first else BAD} the writer's first write in {PAIR} (epoch "
                  f"{first.epoch if first else '?'}) was acknowledged {_s(writable)} after "
                  "the kill")
    return {"outage_failed_over": over and op.get("state") == "succeeded",
            "outage_operation": op_id, "outage_declared_down_seconds": down,
            "outage_failed_over_seconds": done, "outage_writable_seconds": writable,
            "outage_fork_lsn": data.get("fork_lsn"),
            "outage_lost_entries_known": data.get("lost_entries_known")}


def _lost(client: Client, console: Console, env: str, epoch: int, writer: IdWriter,
          found: set[int], known: int | None) -> dict:
    """The lost writes west kept, next to the acknowledged ids east does not have."""
    count, lost = lost_writes(client.lost(env), epoch)
    unknown = set(writer.unknown)
    check = compare(writer.acked_ids(), found, lost, unknown)
    missing = set(check["acked_missing"])
    others = count - len(lost)
    console.print(f"4. lost writes kept by {HOME} (tandem lost {env}): {count} entr"
                  f"{'y' if count == 1 else 'ies'}: ids {ranges(lost)}"
                  + (f" and {others} other write(s)" if others else "")
                  + (f" (the event, from heartbeats, counted {known})"
                     if known is not None and known != count else ""))
    console.print(f"   acknowledged to the writer but not found in {PAIR}: ids "
                  f"{ranges(missing)}")
    if check["lost_not_acked"]:
        console.print(f"   lost but never acknowledged (the answer never came, SIGKILL in "
                      f"flight): ids {ranges(check['lost_not_acked'])}")
    console.print(f"   {OK if check['equal'] else BAD} "
                  + ("the same set" + (", apart from writes whose answer never came"
                                       if check["lost_not_acked"] else "")
                     if check["equal"] else "they differ"))
    return {"outage_writes_acknowledged": len(writer.acks),
            "outage_writes_unknown_outcome": len(unknown), "outage_lost_entries": count,
            "outage_acked_missing": len(missing),
            "outage_lost_equals_acked_missing": check["equal"]}


def _replay(client: Client, console: Console, env: str) -> dict:
    """Apply the lost writes that conflict with nothing written in east since the fork."""
    if not hasattr(client, "replay_lost"):
        console.print("5. replay skipped: this Tandem has no replay of lost writes yet")
        return {"outage_replayed": None, "outage_replay_ok": None}
    try:
        answer = client.replay_lost(env)
    except TandemError as exc:
        if exc.status in (404, 405):  # a controller from before replay
            console.print(f"5. replay skipped: the controller does not offer it ({exc})")
            return {"outage_replayed": None, "outage_replay_ok": None}
        raise
    applied, already, conflicts = answer["applied"], answer["already"], answer["conflicts"]
    table, key = CONFLICT
    expected = [c for c in conflicts if (c["table"], c["key"]) == (table, {"id": key})]
    kept = client.sql(env, f"SELECT qty FROM {table} WHERE id = ?", [key])
    ok = len(expected) == len(conflicts) == 1 and kept["results"][0]["rows"] == [[7]]
    console.print(f"5. {OK if ok else BAD} replay (tandem lost {env} --replay): applied "
                  f"{len(applied)} lost write(s) (their lsns in {HOME}: {ranges(applied)}), "
                  f"{len(already)} already there, {len(conflicts)} conflicting row(s) left "
                  f"alone" + ("" if ok else f" (expected one: {table} {key}, qty 7 kept)"))
    if conflicts:
        rows = Table("lsn", "table", "op", "key", "reason")
        for c in conflicts[:10]:
            rows.add_row(str(c["lsn"]), str(c["table"] or ""), str(c["op"] or ""),
                          ", ".join(f"{k}={v!r}" for k, v in (c["key"] or {}).items()),
                          c["reason"])
        console.print(rows)
    return {"outage_replayed": len(applied), "outage_replay_already": len(already),
            "outage_replay_conflicts": len(conflicts), "outage_replay_ok": ok}


def _failback(client: Client, console: Console, env: str, writer: IdWriter,
              back: bool) -> dict:
    """Home again with the zero-loss protocol; every acknowledged id must be there."""
    if not back:
        return {"outage_failback_state": None, "outage_final_ok": False}
    op = client.wait_operation(client.region_failback(HOME)["id"], timeout=120)
    rto = max_rto_seconds(op)
    console.print(f"6. {OK if op['state'] == 'succeeded' else BAD} region failback {HOME} "
                  f"({op['id']}): {op['state']}, RTO {_ms(rto)}, "
                  f"{(op.get('result') or {}).get('succeeded', '?')} environment(s) home")
    final = ids_in(client, env)
    acked, unknown = writer.acked_ids(), set(writer.unknown)
    ok = acked <= final and final - acked <= unknown
    console.print(f"{OK if ok else BAD} after the outage: {len(acked)} writes acknowledged, "
                  f"{len(acked & final)} found in {client.environment(env)['primary_region']}"
                  f" ({len(final - acked)} more of unknown outcome, replayed)")
    return {"outage_failback_state": op["state"], "outage_failback_rto_ms":
            None if rto is None else round(rto * 1000, 1),
            "outage_rows_found": len(final), "outage_final_ok": ok}


def _try(console: Console, client: Client, env: str, sql: str, params: list) -> None:
    """One write of the demo's own; a refusal is shown, and the replay check then fails."""
    try:
        client.sql(env, sql, params)
    except TandemError as exc:
        console.print(f"[red]✗ {sql}: {exc}[/red]")


def ranges(ids: Iterable[int]) -> str:
    """`3-7, 9, 12-13` (with en dashes): consecutive ids folded, so a few dozen fit on a
    line."""
    ordered = sorted(set(ids))
    if not ordered:
        return "none"
    parts, start = [], ordered[0]
    for prev, cur in zip(ordered, [*ordered[1:], None], strict=True):
        if cur is None or cur != prev + 1:
            parts.append(str(start) if start == prev else f"{start}{EN_DASH}{prev}")
            start = prev if cur is None else cur
    return ", ".join(parts)


def _s(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds:.1f} s"


def _ms(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds * 1000:.0f} ms"
