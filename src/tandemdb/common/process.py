"""How every Tandem process learns who it is: `--config FILE`, or `--data DIR [--name N]`.

`tandem serve controller|node|gateway --config FILE` (and `tandem up`, which writes one
config file per process) gives a process everything in one file of its own: its name, its
data dir and the deployment's shared description (docs/deploy.md), so no process reads
another's data dir. `--data DIR` (a local deployment's `deployment.json`) still works for
one-machine use and the tests that start a process by hand.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .deployment import Deployment, DeploymentError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", type=Path, help="this process's config file")
    where.add_argument("--data", type=Path, help="a local deployment's data directory")
    parser.add_argument("--name", help="the process's name in the deployment (with --data)")


def identify(parser: argparse.ArgumentParser, args: argparse.Namespace,
             kind: str) -> tuple[Deployment, str]:
    """The deployment and this process's name, or a clear usage error (exit code 2). With
    `--data` and no `--name`, a controller or gateway is the deployment's first one."""
    try:
        if args.config is not None:
            deployment, name = Deployment.from_config(args.config)
        else:
            deployment, name = Deployment.load(args.data), args.name or ""
    except (FileNotFoundError, DeploymentError) as exc:
        parser.error(str(exc))
    known = {"node": deployment.nodes, "controller": deployment.controller_specs(),
             "gateway": deployment.gateway_specs()}[kind]
    if not name and kind != "node":
        name = next(iter(known))
    if not name:
        parser.error(f"name the {kind} with --name (one of {', '.join(known)})")
    if name not in known:
        parser.error(f"{name!r} is not a {kind} of this deployment (its {kind}s are "
                     f"{', '.join(known)})")
    return deployment, name
