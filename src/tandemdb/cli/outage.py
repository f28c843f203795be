"""`tandem region outage R` and `tandem region recover R`: rehearse losing a region.

An outage SIGKILLs every node process of region R in the local deployment (the controller
and the gateway stay up, as they would outside the lost region). With `grace_seconds` set,
the controller then declares R down and forces its primaries over to the pair
(docs/failover.md). `recover` starts R's nodes again: their replicas come back fenced,
rejoin with their lost writes kept, and `tandem region failback R` brings them home.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from tandemdb import local

from .connection import DEFAULT_DATA, Data, Json

Region = Annotated[str, typer.Argument(help="Region name, e.g. west.", show_default=False)]
err = Console(stderr=True)


def outage(region: Region, as_json: Json = False, data: Data = DEFAULT_DATA) -> None:
    """Stage an outage: SIGKILL every node of REGION (nothing is shut down cleanly)."""
    killed = _run(local.stage_outage, data, region)
    if as_json:
        print(json.dumps({"region": region, "killed": killed}))
        return
    err.print(f"region {region} is out: SIGKILLed {', '.join(killed) or 'nothing (not running)'}"
              f"; 'tandem region recover {region}' brings it back")


def recover(region: Region, as_json: Json = False, data: Data = DEFAULT_DATA) -> None:
    """End a staged outage: start REGION's nodes again."""
    started = _run(local.recover, data, region)
    if as_json:
        print(json.dumps({"region": region, "started": started}))
        return
    err.print(f"region {region} is back: started {', '.join(started) or 'by tandem up'}; its "
              "replicas rejoin as secondaries, then 'tandem region failback "
              f"{region}' brings its environments home")


def _run(action: Callable[[Path, str], list[str]], data: Path, region: str) -> list[str]:
    """The process names `action` touched; a refusal is one line and exit status 1."""
    try:
        return action(data, region)
    except (local.StartError, FileNotFoundError) as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(1) from None
