"""`tandem up | down | demo`: run a local deployment (see tandemdb.local)."""

import json
import math
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from tandemdb.common.outages import OUTAGE_FILE

from .connection import LazyConsole

if TYPE_CHECKING:
    from tandemdb.local import LocalDeployment

DEFAULT_DATA = Path("tandem-data")
err = LazyConsole(stderr=True)


def parse_seconds(text: str | None, flag: str,
                  bounds: tuple[float, float] | None = None) -> float | None:
    """A `SECONDS|off` flag: None for `off` (or not given), else a number of seconds above
    0 (within `bounds`, both included, if given); a ValueError naming the flag otherwise."""
    if text is None or text.strip().lower() == "off":
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value > 0
            and (bounds is None or bounds[0] <= value <= bounds[1])):
        within = "above 0" if bounds is None else f"from {bounds[0]:g} to {bounds[1]:g}"
        raise ValueError(f"{flag} must be a number of seconds {within}, or off; not {text!r}")
    return value


# `tandem up`'s SECONDS|off flags: deployment.json's key, and the bounds it accepts
# (common/deployment.py checks the same). Given, each is saved for the next `up` too.
SECONDS_FLAGS: dict[str, tuple[str, tuple[float, float] | None]] = {
    "--grace-seconds": ("grace_seconds", None),
    "--node-grace-seconds": ("node_grace_seconds", (0.1, 3600.0)),
    "--replace-after": ("replace_after_seconds", (1.0, 86400.0))}


NO_FAULT_PROXY = ("--fault-proxy stages partitions of one controller on sqlite; with the "
                  "control plane on etcd, stage the loss of a whole site with 'tandem region "
                  "outage R' instead")


def check_nodes_per_region(count: int) -> None:
    """`--nodes-per-region`: every region needs a node; ValueError saying so."""
    if count < 1:
        raise ValueError(f"--nodes-per-region must be 1 or more, not {count}: every region "
                         "needs a node to host its replicas (2 or more adds a local "
                         "synchronous secondary, docs/ha.md)")


def up(
    data: Path = typer.Option(DEFAULT_DATA, "--data", help="Deployment data directory."),
    regions: str = typer.Option("west=east", help="Region pairs, e.g. west=east."),
    nodes_per_region: int = typer.Option(
        2, help="Nodes per region; 2 or more gives every environment a local synchronous "
                "secondary on another node of its home region (docs/ha.md); 1 turns that "
                "off. Used when the data directory has no deployment yet."),
    port: int = typer.Option(7070, min=1024, max=65000, help="Gateway port; the others follow."),
    detach: bool = typer.Option(False, "--detach", help="Return once every process is up."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    grace_seconds: str | None = typer.Option(
        None, "--grace-seconds", show_default=False,
        help="Seconds a region must be lost, to the controller and to its pair, before its "
             "primaries are force-failed-over (default 30); 'off' leaves it to the operator."),
    node_grace_seconds: str | None = typer.Option(
        None, "--node-grace-seconds", show_default=False,
        help="Seconds a node may miss heartbeats before it is declared down and its "
             "primaries move to their sync local secondaries (default 2); 'off' leaves it "
             "to the operator."),
    replace_after: str | None = typer.Option(
        None, "--replace-after", show_default=False,
        help="Seconds a node may stay down before its replicas are re-created on other "
             "nodes of its region (default 60); 'off' never replaces them."),
    lease_ttl: float | None = typer.Option(
        None, "--lease-ttl", min=0.5, show_default=False,
        help="Seconds of a primary's lease from the controller (default 5)."),
    store: str | None = typer.Option(
        None, "--store", show_default=False,
        help="Where the controllers keep their state: sqlite (default; one controller), "
             "etcd (a 3-member etcd cluster this command runs, one member per site), or "
             "etcd://HOST:PORT[,HOST:PORT…] (a cluster that already runs). Used when the "
             "data directory has no deployment yet."),
    controllers: int | None = typer.Option(
        None, "--controllers", show_default=False,
        help="Controllers, one per site (odd; default 1 with sqlite, 3 with etcd). They "
             "elect a leader through an etcd lease."),
    witness: str = typer.Option(
        "witness", "--witness",
        help="The third site beside the regions (etcd member and controller), so that "
             "losing a region leaves a majority."),
    gateways: str | None = typer.Option(
        None, "--gateways", show_default=False,
        help="single, or per-region (one gateway in each region; the default with etcd)."),
    fault_proxy: bool = typer.Option(
        False, "--fault-proxy",
        help="Run the links to the controller and between paired regions through a "
             "fault-injecting proxy, so that 'tandem region outage R --partition' can cut "
             "them (for this up only)."),
) -> None:
    """Start a local deployment: controllers, gateways, nodes (and etcd) as processes."""
    from tandemdb import local
    from tandemdb.common.deployment import DeploymentError
    from tandemdb.common.layout import Shape

    try:
        shape = Shape.parse(store or "sqlite", controllers, gateways, witness)
        pairs = local.parse_pairs(regions)
        given = {"--grace-seconds": grace_seconds, "--replace-after": replace_after,
                 "--node-grace-seconds": node_grace_seconds}
        seconds = {SECONDS_FLAGS[flag][0]: parse_seconds(text, flag, SECONDS_FLAGS[flag][1])
                   for flag, text in given.items() if text is not None}
        check_nodes_per_region(nodes_per_region)
    except ValueError as exc:
        _fail(str(exc))
    if local.running_pids(data):
        _fail(f"a deployment is already running from {data}; 'tandem down --data {data}' "
              "stops it")
    if fault_proxy and shape.on_etcd:  # before anything is planned
        _fail(NO_FAULT_PROXY)
    if shape.endpoints:  # before a deployment that could not run is planned
        _check_etcd(shape.endpoints)
    try:
        deployment = local.open_or_plan(data, pairs, nodes_per_region, port, shape)
    except (DeploymentError, ValueError) as exc:  # a deployment.json or shape that cannot be
        _fail(str(exc))
    if deployment.store.get("endpoints") and not shape.endpoints:
        _check_etcd(deployment.store_endpoints())
    planned = deployment.store.get("kind", "sqlite")
    if fault_proxy and planned != "sqlite":
        _fail(NO_FAULT_PROXY)
    if store is not None and (planned == "sqlite") != (shape.store == "sqlite"):
        _fail(f"the deployment in {data} keeps its state in {planned}, not {store}; a new "
              "--data directory plans a new deployment")
    (Path(data) / OUTAGE_FILE).unlink(missing_ok=True)  # `up` brings every region up
    if seconds or lease_ttl is not None or fault_proxy != bool(deployment.fault_proxy):
        for key, value in seconds.items():  # kept for the next `up` too, like the lease
            setattr(deployment, key, value)
        if lease_ttl is not None:
            deployment.lease_ttl = lease_ttl
        if fault_proxy and not deployment.fault_proxy:
            deployment.add_fault_proxy()
        elif not fault_proxy:
            deployment.fault_proxy = None
        deployment.save()
    cluster = local.LocalDeployment(deployment)
    try:
        with err.status("starting") as status:
            cluster.start_all(progress=lambda msg: status.update(msg))
    except local.StartError as exc:
        cluster.stop_all()
        _fail(str(exc))
    cluster.write_run_file(supervised=not detach)
    info = {"url": deployment.gateway_url, "urls": deployment.gateway_urls(),
            "token": deployment.token, "data": str(Path(deployment.data))}
    if as_json:
        print(json.dumps(info))
    else:
        err.print(f"[green]Tandem is up[/green] at {', '.join(info['urls'])} (data "
                  f"{info['data']}, logs in {cluster.logs})")
        err.print(f"token: {info['token']}")
    if detach:
        return
    _supervise(cluster)


def _check_etcd(endpoints: list[str]) -> None:
    """An etcd cluster that runs already must answer before anything starts (within a few
    seconds), else one line naming its endpoints."""
    from tandemdb import etcd_local

    try:
        etcd_local.check_answers(endpoints, timeout=5.0)
    except etcd_local.EtcdError as exc:
        _fail(str(exc))


def _supervise(cluster: "LocalDeployment") -> None:
    """Foreground mode: restart a child that dies; stop everything cleanly on Ctrl-C."""
    from tandemdb import local

    stopping = False

    def _stop(_signo: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    err.print("running in the foreground; Ctrl-C stops every process")
    while not stopping:
        for name in sorted(set(cluster.dead()) - cluster.staged_out()):
            code = cluster.processes[name].returncode
            err.print(f"[red]{name} exited with code {code}[/red]; restarting it "
                      f"(log: {cluster.log_file(name)})")
            try:
                cluster.start(name)
            except local.StartError as exc:
                err.print(f"[red]{exc}[/red]")
            cluster.write_run_file(supervised=True)
        time.sleep(0.5)
    err.print("stopping")
    cluster.stop_all()
    (Path(cluster.data) / local.RUN_FILE).unlink(missing_ok=True)


def down(
    data: Path = typer.Option(DEFAULT_DATA, "--data", help="Deployment data directory."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Stop a detached local deployment (its data stays for the next 'tandem up')."""
    from tandemdb import local

    stopped = local.stop_detached(data)
    if as_json:
        print(json.dumps({"stopped": stopped}))
    elif stopped:
        err.print(f"stopped {', '.join(stopped)}")
    else:
        err.print(f"nothing was running from {data}")


def demo(
    rows: int = typer.Option(1000, min=10, help="Rows to write."),
    files: int = typer.Option(20, min=0, help="Files to write."),
    nodes_per_region: int = typer.Option(
        2, help="Nodes per region; with 2 or more every environment also has a local sync "
                "secondary, which the demo checks too."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Start a deployment, replicate rows and files, fail over and back (planned), then lose
    a region (forced failover, lost writes, replay, failback), compare, stop."""
    from tandemdb.demo import run_demo

    try:
        check_nodes_per_region(nodes_per_region)
    except ValueError as exc:
        _fail(str(exc))
    report = run_demo(rows=rows, files=files, quiet=as_json,
                      nodes_per_region=nodes_per_region)
    if as_json:
        print(json.dumps(report))
    if not report["ok"]:
        raise typer.Exit(1)


def _fail(message: str) -> None:
    from rich.markup import escape

    # soft_wrap: paths in the message (log files) must stay whole for people and scripts.
    err.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True, highlight=False)
    raise typer.Exit(1)
