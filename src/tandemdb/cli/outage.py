"""`tandem region outage R [--partition]` / `tandem region recover R`, and the same for one
node, `tandem node outage NODE [--partition]` / `tandem node recover NODE`: rehearse
losing a region, or a single machine of one.

An outage SIGKILLs every node process of region R (or the one process of NODE) in the local
deployment (the controller and the gateway stay up, as they would outside what was lost).
`--partition` instead leaves them running, and reachable by clients directly, but has the
fault proxy (`tandem up --fault-proxy`) cut their links to the controller and to the paired
region; a node's also to the other nodes of its own region (its local replicas' streams).
With `grace_seconds` set, the controller then declares R down and forces its primaries over
to the pair (docs/failover.md); with `node_grace_seconds` set, it declares NODE down and
promotes the sync local secondaries of its primaries (docs/ha.md). `recover` starts the
processes again, or heals the links: their replicas come back, rejoin as secondaries with
their lost writes kept, and `tandem region failback R` brings a region's environments home.
"""

import json
from collections.abc import Callable
from typing import Annotated, TypeVar

import typer

from tandemdb.common.outages import PARTITION

from .connection import DEFAULT_DATA, Data, Json, LazyConsole

Region = Annotated[str, typer.Argument(help="Region name, e.g. west.", show_default=False)]
Node = Annotated[str, typer.Argument(help="Node name, e.g. west-1 ('tandem node list').",
                                     show_default=False)]
T = TypeVar("T")
err = LazyConsole(stderr=True, soft_wrap=True)  # whole lines: commands and paths stay intact
# What a region and a node outage each say after the facts: who still serves clients, and
# what comes after `recover`.
STILL_SERVES = {"region": "its nodes still serve", "node": "it still serves"}
AFTER_RECOVER = {"region": "its replicas rejoin as secondaries, then 'tandem region failback "
                           "{name}' brings its environments home",
                 "node": "its replicas rejoin, as secondaries where others were promoted "
                         "meanwhile"}


def outage(region: Region, partition: bool = typer.Option(
        False, "--partition", help="Keep REGION's nodes running and reachable by clients, "
        "but cut their links to the controller and the paired region (needs tandem up "
        "--fault-proxy)."), as_json: Json = False, data: Data = DEFAULT_DATA) -> None:
    """Stage an outage: SIGKILL every node of REGION, and the controller, gateway and etcd
    member of its site if it has them (nothing is shut down cleanly); or partition it from
    the controller and its pair."""
    _outage("region", region, partition, as_json, data)


def node_outage(node: Node, partition: bool = typer.Option(
        False, "--partition", help="Keep NODE running and reachable by clients, but cut its "
        "links to the controller and to every other node (needs tandem up --fault-proxy)."),
        as_json: Json = False, data: Data = DEFAULT_DATA) -> None:
    """Stage the loss of one node: SIGKILL its process (nothing is shut down cleanly), or
    partition it from the controller and the other nodes."""
    _outage("node", node, partition, as_json, data)


def recover(region: Region, as_json: Json = False, data: Data = DEFAULT_DATA) -> None:
    """End a staged outage: start REGION's processes again (nodes, and its site's etcd
    member, controller and gateway), or heal its links."""
    _recover("region", region, as_json, data)


def node_recover(node: Node, as_json: Json = False, data: Data = DEFAULT_DATA) -> None:
    """End a staged node outage: start NODE again, or heal its links."""
    _recover("node", node, as_json, data)


def _outage(what: str, name: str, partition: bool, as_json: bool, data: Data) -> None:
    from tandemdb import local

    hit = _run(lambda: local.stage_outage(data, name, partition, what))
    if as_json:
        key = "cut" if partition else "killed"
        print(json.dumps({what: name, "kind": "partition" if partition else "kill",
                          key: hit}))
    elif partition:
        err.print(f"{what} {name} is partitioned: cut {len(hit)} link(s) ({', '.join(hit)}); "
                  f"{STILL_SERVES[what]} clients directly; 'tandem {what} recover {name}' "
                  "heals them")
    else:
        err.print(f"{what} {name} is out: SIGKILLed "
                  f"{', '.join(hit) or 'nothing (not running)'}; 'tandem {what} recover "
                  f"{name}' brings it back")


def _recover(what: str, name: str, as_json: bool, data: Data) -> None:
    from tandemdb import local

    kind, done = _run(lambda: local.recover(data, name, what))
    if as_json:
        key = "healed" if kind == PARTITION else "started"
        print(json.dumps({what: name, key: done}))
        return
    did = (f"healed {len(done)} link(s)" if kind == PARTITION
           else f"started {', '.join(done) or 'by tandem up'}")
    err.print(f"{what} {name} is back: {did}; {AFTER_RECOVER[what].format(name=name)}")


def _run(action: Callable[[], T]) -> T:
    """What `action` touched; a refusal is one line and exit status 1."""
    from tandemdb.common.deployment import DeploymentError
    from tandemdb.local import StartError

    try:
        return action()
    except (StartError, FileNotFoundError, DeploymentError) as exc:
        err.print(f"error: {exc}", highlight=False)
        raise typer.Exit(1) from None
