"""`tandem serve controller|node|gateway --config FILE`: run one process of a deployment.

What `tandem up` does for every process on one machine, an operator does for one process on
a host of its own (docs/deploy.md): the config file names the process, its data dir and
the deployment it is part of (addresses of its peers, the etcd endpoints).
"""

from enum import StrEnum
from pathlib import Path

import typer


class Kind(StrEnum):
    controller = "controller"
    node = "node"
    gateway = "gateway"


def serve(
    kind: Kind = typer.Argument(..., help="Which process: controller, node or gateway."),
    config: Path = typer.Option(..., "--config", help="The process's config file (JSON)."),
) -> None:
    """Run one controller, node or gateway in the foreground, from its config file."""
    import importlib

    module = importlib.import_module(f"tandemdb.{kind.value}.app")
    module.main(["--config", str(config)])
