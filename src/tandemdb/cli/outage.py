"""`tandem region outage R [--partition]` and `tandem region recover R`: rehearse losing a
region.

An outage SIGKILLs every node process of region R in the local deployment (the controller
and the gateway stay up, as they would outside the lost region). `--partition` instead
leaves R's nodes running, and reachable by clients directly, but has the fault proxy
(`tandem up --fault-proxy`) cut their links to the controller and to the paired region.
With `grace_seconds` set, the controller then declares R down and forces its primaries over
to the pair (docs/failover.md). `recover` starts R's nodes again, or heals its links: their
replicas come back fenced, rejoin with their lost writes kept, and `tandem region failback
R` brings them home.
"""

import json
from collections.abc import Callable
from typing import Annotated, TypeVar

import typer

from tandemdb.common.outages import PARTITION

from .connection import DEFAULT_DATA, Data, Json, LazyConsole

Region = Annotated[str, typer.Argument(help="Region name, e.g. west.", show_default=False)]
T = TypeVar("T")
err = LazyConsole(stderr=True, soft_wrap=True)  # whole lines: commands and paths stay intact


def outage(region: Region, partition: bool = typer.Option(
        False, "--partition", help="Keep REGION's nodes running and reachable by clients, "
        "but cut their links to the controller and the paired region (needs tandem up "
        "--fault-proxy)."), as_json: Json = False, data: Data = DEFAULT_DATA) -> None:
    """Stage an outage: SIGKILL every node of REGION (nothing is shut down cleanly), or
    partition it from the controller and its pair."""
    from tandemdb import local

    hit = _run(lambda: local.stage_outage(data, region, partition))
    if as_json:
        key = "cut" if partition else "killed"
        print(json.dumps({"region": region, "kind": "partition" if partition else "kill",
                          key: hit}))
    elif partition:
        err.print(f"region {region} is partitioned: cut {len(hit)} link(s) ({', '.join(hit)}); "
                  f"its nodes still serve clients directly; 'tandem region recover {region}' "
                  "heals them")
    else:
        err.print(f"region {region} is out: SIGKILLed "
                  f"{', '.join(hit) or 'nothing (not running)'}; 'tandem region recover "
                  f"{region}' brings it back")


def recover(region: Region, as_json: Json = False, data: Data = DEFAULT_DATA) -> None:
    """End a staged outage: start REGION's nodes again, or heal its links."""
    from tandemdb import local

    kind, done = _run(lambda: local.recover(data, region))
    if as_json:
        key = "healed" if kind == PARTITION else "started"
        print(json.dumps({"region": region, key: done}))
        return
    what = (f"healed {len(done)} link(s)" if kind == PARTITION
            else f"started {', '.join(done) or 'by tandem up'}")
    err.print(f"region {region} is back: {what}; its replicas rejoin as secondaries, then "
              f"'tandem region failback {region}' brings its environments home")


def _run(action: Callable[[], T]) -> T:
    """What `action` touched; a refusal is one line and exit status 1."""
    from tandemdb.common.deployment import DeploymentError
    from tandemdb.local import StartError

    try:
        return action()
    except (StartError, FileNotFoundError, DeploymentError) as exc:
        err.print(f"error: {exc}", highlight=False)
        raise typer.Exit(1) from None
