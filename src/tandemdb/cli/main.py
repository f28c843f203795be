"""`tandem …`: the command line. Every command takes `--json` for scripts."""

import json

import typer

from tandemdb import __version__

from . import data, deploy, envs, failover, lost, nodes, ops, outage, serve, status
from .base import Typer
from .bench import bench_app

app = Typer(help="Tandem: geo-replicated environments with planned and unplanned "
                       "failover.", no_args_is_help=True, add_completion=False,
                  pretty_exceptions_show_locals=False)  # locals may hold the token
app.add_typer(bench_app, name="bench")

# A local deployment (deploy.py).
app.command("up")(deploy.up)
app.command("down")(deploy.down)
app.command("demo")(deploy.demo)
app.command("serve")(serve.serve)  # one process on a host of its own (docs/deploy.md)
# The API, through the gateway (status.py, envs.py, data.py; all built on tandemdb.client).
app.command("status")(status.status)
app.add_typer(envs.app, name="env")
app.command("sql")(data.sql)
app.add_typer(data.files_app, name="files")
# Operations and events (ops.py).
app.command("ops")(ops.ops)
app.command("events")(ops.events)
# Failover of one environment or a whole region, and the regions' state (failover.py).
app.command("failover")(failover.failover)
app.command("lost")(lost.lost)
app.add_typer(failover.region_app, name="region")
failover.region_app.command("outage")(outage.outage)
failover.region_app.command("recover")(outage.recover)
app.command("regions")(failover.region_list)
# The nodes, their state and what they host (nodes.py); a node's staged loss (outage.py).
app.add_typer(nodes.app, name="node")
nodes.app.command("outage")(outage.node_outage)
nodes.app.command("recover")(outage.node_recover)


@app.command()
def version(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Print Tandem's version."""
    print(json.dumps({"version": __version__}) if as_json else f"tandem {__version__}")


if __name__ == "__main__":
    app()
