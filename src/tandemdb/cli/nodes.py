"""`tandem node list`: the nodes, their state and the replicas they host."""

from .base import Typer
from .connection import DEFAULT_DATA, Data, Json, Token, Url, connect, console, print_json, reported

app = Typer(help="List the nodes of the deployment.", no_args_is_help=True)


@app.command("list")
def list_(as_json: Json = False, url: Url = None, token: Token = None,
          data: Data = DEFAULT_DATA) -> None:
    """List nodes: region, state (healthy, down …), primaries and secondaries, heartbeat."""
    from .tables import nodes_table

    with reported(), connect(url, token, data) as client:
        nodes = client.nodes()
    if as_json:
        print_json({"nodes": nodes})
        return
    console().print(nodes_table(nodes))
