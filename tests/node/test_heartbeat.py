"""Heartbeat reports and reconciliation, run in-process on a real node's replica set (the
HTTP side needs a controller, which the node tests do not start)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tandemdb.common.deployment import Deployment
from tandemdb.node.app import Node
from tandemdb.node.heartbeat import Heartbeat
from tandemdb.testing import plan


def desired(env: str, role: str, dep: Deployment, **extra) -> dict:
    def ref(name: str) -> dict:
        return {"node": name, "region": dep.nodes[name]["region"], "url": dep.node_url(name)}

    return {"env": env, "role": role, "epoch": extra.get("epoch", 1), "type": "production",
            "rpo_limit_seconds": 900,
            "primary": ref("west-1") if role == "secondary" else None,
            "secondaries": [ref("east-1")] if role == "primary" else [],
            "version": extra.get("version", 0)}


def test_reconcile_creates_adopts_and_drops(tmp_path: Path) -> None:
    dep = plan(tmp_path)

    async def scenario() -> None:
        node = Node(dep, "west-1")
        await node.replicas.load()
        beat = Heartbeat(node)
        try:
            await beat.reconcile([desired("alpha", "primary", dep),
                                  desired("beta", "primary", dep)])
            assert {r.name for r in node.replicas} == {"alpha", "beta"}
            alpha = node.replicas.get("alpha")
            await asyncio.to_thread(alpha.env.execute, ["CREATE TABLE t(x)"])
            report = await beat.report()
            assert report["node"] == "west-1" and report["region"] == "west"
            assert report["replicas"]["alpha"] == {
                "role": "primary", "epoch": 1, "last_lsn": 1, "seeding": None,
                "consumers": {"east-1": {"acked_lsn": 0, "lag_entries": 1,
                                         "lag_seconds": report["replicas"]["alpha"]
                                         ["consumers"]["east-1"]["lag_seconds"]}}}
            assert report["replicas"]["alpha"]["consumers"]["east-1"]["lag_seconds"] >= 0

            # Promotion of a new epoch is adopted; beta is no longer listed and goes.
            await beat.reconcile([desired("alpha", "primary", dep, epoch=3)])
            assert [r.name for r in node.replicas] == ["alpha"]
            assert alpha.env.epoch == 3
            assert not (node.dir / "envs" / "beta").exists()
            record = (node.dir / "envs" / "alpha" / "replica.json").read_text()
            assert '"epoch": 3' in record

            # A malformed record is logged and skipped; the rest is still reconciled.
            await beat.reconcile([desired("alpha", "primary", dep, epoch=3),
                                  {"env": "gamma", "role": "emperor", "epoch": 1}])
            assert [r.name for r in node.replicas] == ["alpha"]
        finally:
            await beat.close()
            await node.replicas.close()

    asyncio.run(scenario())
    # A restarted node resumes from disk with the adopted record.
    async def reopen() -> None:
        node = Node(dep, "west-1")
        await node.replicas.load()
        alpha = node.replicas.get("alpha")
        assert alpha.role == "primary" and alpha.env.epoch == 3 and alpha.env.last_lsn == 1
        assert set(alpha.consumers) == {"east-1"}
        await node.replicas.close()

    asyncio.run(reopen())


def test_late_heartbeat_answers_cannot_undo_newer_records(tmp_path: Path) -> None:
    """An answer computed before a failover step or a creation may arrive after it: its
    older records are ignored, and it does not drop a replica newer than its revision."""
    dep = plan(tmp_path, lease_ttl=0)

    async def scenario() -> None:
        node = Node(dep, "west-1")
        await node.replicas.load()
        beat = Heartbeat(node)
        try:
            await beat.reconcile([desired("alpha", "primary", dep, version=5)], revision=5)
            alpha = node.replicas.get("alpha")
            fenced = {**desired("alpha", "fenced", dep, version=7), "secondaries": []}
            await node.replicas.ensure("alpha", fenced)  # the failover's newer record
            assert alpha.role == "fenced"
            # The late answer (revision 6) still says primary at version 5: ignored.
            await beat.reconcile([desired("alpha", "primary", dep, version=5)], revision=6)
            assert alpha.role == "fenced" and alpha.record.version == 7
            # A replica created at version 9 is not dropped by an answer as of revision 8 …
            await node.replicas.ensure("beta", desired("beta", "primary", dep, version=9))
            await beat.reconcile([fenced], revision=8)
            assert {r.name for r in node.replicas} == {"alpha", "beta"}
            # … but is by an answer that knows of it and leaves it out.
            await beat.reconcile([fenced], revision=10)
            assert {r.name for r in node.replicas} == {"alpha"}
            # An older epoch than the replica knows is refused, never adopted.
            await node.replicas.ensure("alpha", desired("alpha", "primary", dep, epoch=4,
                                                        version=11))
            await beat.reconcile([desired("alpha", "secondary", dep, epoch=2, version=12)],
                                 revision=12)
            assert (alpha.role, alpha.env.epoch) == ("primary", 4)
        finally:
            await beat.close()
            await node.replicas.close()

    asyncio.run(scenario())
