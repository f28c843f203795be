"""`tandem node list|drain|uncordon`: the nodes, their state and the replicas they host;
planned maintenance of one node (docs/ha.md, "Drain").

`tandem node drain NODE` starts the `node.drain` operation and, unless `--no-wait`, follows
it: which step runs and how many primaries have moved, then one line per primary moved
(its RTO, data loss 0) and one per secondary (re-created elsewhere, or why it stayed).
Exit code 1 when the drain failed or a primary did not move.
"""

from typing import TYPE_CHECKING, Annotated, Any

import typer

from .base import Typer
from .connection import (
    DEFAULT_DATA,
    Data,
    Json,
    Token,
    Url,
    connect,
    console,
    print_json,
    reported,
)

if TYPE_CHECKING:
    from rich.table import Table

    from tandemdb.client import Client

app = Typer(help="Nodes: list them; drain one for maintenance, and uncordon it after.",
            no_args_is_help=True)

NodeName = Annotated[str, typer.Argument(help="Node name, e.g. west-1.", show_default=False)]


@app.command("list")
def list_(as_json: Json = False, url: Url = None, token: Token = None,
          data: Data = DEFAULT_DATA) -> None:
    """List nodes: region, state (healthy, down, cordoned …), primaries and secondaries."""
    from .tables import nodes_table

    with reported(), connect(url, token, data) as client:
        nodes = client.nodes()
    if as_json:
        print_json({"nodes": nodes})
        return
    console().print(nodes_table(nodes))


@app.command("drain")
def drain(
    node: NodeName,
    parallelism: Annotated[int | None, typer.Option(
        "--parallelism", min=1, show_default=False,
        help="Primaries switched over at the same time (default: the controller's).")] = None,
    no_wait: Annotated[bool, typer.Option(
        "--no-wait", help="Print the started operation and return; 'tandem ops ID' "
                          "follows it.")] = False,
    as_json: Json = False, url: Url = None, token: Token = None, data: Data = DEFAULT_DATA,
) -> None:
    """Move everything off NODE (primaries with zero loss) and leave it cordoned."""
    from .failover import print_started

    with reported(), connect(url, token, data) as client:
        op = client.drain_node(node, parallelism)
        if no_wait:
            print_started(op, as_json)
            return
        op, children = _follow(client, op, as_json)
    _report(op, children, as_json)


@app.command("uncordon")
def uncordon(node: NodeName, as_json: Json = False, url: Url = None, token: Token = None,
             data: Data = DEFAULT_DATA) -> None:
    """Make a drained NODE placeable again (new replicas may go there)."""
    with reported(), connect(url, token, data) as client:
        answer = client.uncordon_node(node)
    if as_json:
        print_json(answer)
    elif answer.get("was"):
        console().print(f"node {node}: uncordoned (it was {answer['was']})")
    else:
        console().print(f"node {node}: was not cordoned; nothing to do")


def _follow(client: "Client", op: dict, as_json: bool) -> tuple[dict, list[dict]]:
    """Follow the drain to its end, showing its step and the primaries moved so far."""
    from tandemdb.client.operations import child_counts

    from .failover import CHILDREN_LIMIT, follow, stopped_following

    op_id, title = op["id"], f"drain {op['target']} ({op['id']})"
    children: list[dict] = []
    err = console(stderr=True, quiet=as_json)
    try:
        with err.status(title) as status:
            def update(current: dict) -> None:
                nonlocal children
                children = client.operations(CHILDREN_LIMIT, parent=op_id)
                succeeded, failed, total = child_counts(children)
                step = next((s["name"] for s in current.get("steps", [])
                             if s.get("state") == "running"), current.get("state"))
                status.update(f"{title}: {step}; {succeeded + failed} of {total} "
                              "primary(ies) moved")

            op = follow(client, op_id, update)
    except KeyboardInterrupt:
        raise stopped_following(op_id) from None
    return op, children


def _report(op: dict, children: list[dict], as_json: bool) -> None:
    """The outcome, each primary's RTO, each secondary's fate; exit 1 on a failure."""
    from tandemdb.client.operations import failed_environments, merged_results

    from .failover import exit_if_failed
    from .views import outcome_line, results_table

    entries = merged_results(op, children)
    failed = failed_environments(op, entries)
    if as_json:
        print_json(op)
    else:
        out = console()
        out.print(outcome_line(op, entries))
        if entries:  # nodes in the "from → to" column: a drain stays in its region
            out.print(results_table([{**e, "from_region": e.get("from_node", "?"),
                                      "to_region": e.get("to_node", "?")} for e in entries]))
        secondaries = (op.get("result") or {}).get("secondaries") or []
        if secondaries:
            out.print(secondaries_table(secondaries))
    exit_if_failed(op, failed)


def secondaries_table(lines: list[dict[str, Any]]) -> "Table":
    """One row per replica other than a primary: re-created elsewhere, or why it stayed."""
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, title="secondaries")
    for column in ("env", "kind", "from → to", "state", "note"):
        table.add_column(column, overflow="fold" if column == "note" else "ellipsis")
    for line in lines:
        table.add_row(str(line.get("environment")), str(line.get("kind")),
                      f"{line.get('from_node')} → {line.get('to_node') or '(stays)'}",
                      str(line.get("state")), str(line.get("note") or ""))
    return table
