"""The controller process: `python -m tandemdb.controller --data DIR`.

Wires the parts (store, topology, catalog, live status, reconciliation, routing, events,
webhooks, operations, environments) into one FastAPI app served by uvicorn on
127.0.0.1:`controller_port`, watches node health and delivers webhooks. At start-up it
resumes the operations a previous run left unfinished (invariant 7). State lives in
`<data>/controller/store.sqlite`; node health and the latest heartbeat reports live in memory
and come back within one heartbeat interval.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI
from prometheus_client import Counter, Gauge

from tandemdb.common import process
from tandemdb.common.deployment import Deployment
from tandemdb.common.http import BodyLimit, install_error_handlers
from tandemdb.common.metrics import install_metrics
from tandemdb.common.shutdown import serve

from .api import install_routes
from .catalog import Catalog
from .control_plane import install_routes as install_control_plane
from .cordon import Cordons
from .drain import Drains
from .environments import Environments
from .events import Events
from .failover import Failovers
from .forward import FollowerForward
from .healing import Healing
from .lag import LagWatch
from .leader import Leadership
from .node_failover import NodeFailovers
from .nodes import NodeClient
from .operations import Operation, Operations
from .outage import OutageWatch
from .reconcile import Reconciler
from .regions import Regions
from .rejoin import Rejoins
from .replace import Replacer
from .replay import Replayer
from .reseed import install_routes as install_reseed
from .routing import Routing
from .status import LiveStatus
from .store import Store, open_store
from .sync import SyncRecords
from .sync import install_routes as install_sync
from .topology import Topology
from .webhooks import Delivery, Webhooks

log = logging.getLogger("tandem.controller")

MAX_BODY_BYTES = 8 << 20  # heartbeats of nodes with many replicas are the largest bodies
SHUTDOWN_GRACE_SECONDS = 2
ROUTING_WATCHERS = 64  # threads for blocked routing long polls, apart from the store's work
REJOIN_CHECK_BEATS = 20  # half heartbeat intervals between retries of pending rejoins
STORE_THREADS = 48  # threads for store calls (asyncio.to_thread)

HEALTHY_NODES = Gauge("tandem_controller_healthy_nodes",
                      "Nodes that heartbeated within 3 x heartbeat_interval", ["region"])
HEARTBEATS = Counter("tandem_controller_heartbeats_total", "Heartbeats received", ["node"])


@dataclass
class Controller:
    deployment: Deployment
    store: Store
    topology: Topology
    catalog: Catalog
    status: LiveStatus
    reconciler: Reconciler
    routing: Routing
    environments: Environments
    nodes: NodeClient
    watchers: ThreadPoolExecutor
    events: Events
    webhooks: Webhooks
    operations: Operations
    delivery: Delivery
    failovers: Failovers
    regions: Regions
    lag: LagWatch
    rejoins: Rejoins
    outages: OutageWatch
    node_failovers: NodeFailovers
    replayer: Replayer
    sync: SyncRecords
    drains: Drains
    healing: Healing
    background: set = field(default_factory=set)  # tasks kept referenced until done

    @classmethod
    def open(cls, deployment: Deployment, store: Store | None = None) -> Controller:
        store = store or open_store(Path(deployment.data) / "controller")
        topology = Topology(store, deployment)
        catalog = Catalog(store)
        status = LiveStatus()
        reconciler = Reconciler(catalog, topology)
        nodes = NodeClient(deployment.secret)
        events = Events(store)
        webhooks = Webhooks(store, events, deployment.allow_private_webhooks)
        operations = Operations(store, events)
        delivery = Delivery(store, events, deployment.allow_private_webhooks)
        events.listeners.append(delivery.notify)
        environments = Environments(catalog, topology, status, reconciler, nodes, operations,
                                    events)
        failovers = Failovers(catalog, topology, reconciler, nodes, operations, events,
                              status, deployment.lease_ttl)
        regions = Regions(catalog, topology, failovers, operations, events)
        replacer = Replacer(catalog, topology, reconciler, nodes, operations, events)
        return cls(deployment, store, topology, catalog, status, reconciler,
                   Routing(catalog, topology), environments, nodes,
                   ThreadPoolExecutor(ROUTING_WATCHERS, thread_name_prefix="routing-watch"),
                   events, webhooks, operations, delivery, failovers, regions,
                   LagWatch(topology, events),
                   Rejoins(catalog, topology, reconciler, nodes, operations, events),
                   OutageWatch(deployment, topology, catalog, status, regions, operations),
                   NodeFailovers(deployment, topology, catalog, failovers, operations, events),
                   Replayer(store, catalog, topology, nodes), SyncRecords(catalog, events),
                   Drains(catalog, topology, failovers, operations,
                          Cordons(store, operations), replacer),
                   Healing(deployment, topology, catalog, operations, replacer))

    def start(self) -> list[Operation]:
        """Seed regions, finish orphaned records; answers the operations to resume."""
        self.topology.seed()
        live = self.operations.live()
        self.environments.recover({op.id for op in live})
        log.info("controller: serving regions %s with nodes %s at store revision %d; %d "
                 "unfinished operation(s) to resume", ", ".join(sorted(
                     {" <-> ".join(sorted(pair)) for pair in self.deployment.regions.items()})),
                 ", ".join(self.deployment.nodes), self.store.revision(), len(live))
        return live

    async def stop(self) -> None:
        await self.operations.stop()  # records stay running: the next start resumes them
        await self.nodes.close()
        self.store.close()  # wakes blocked routing and event watches
        self.watchers.shutdown(wait=False, cancel_futures=True)

    async def heartbeat(self, node: str, url: str, replicas: dict[str, dict],
                        peers: dict[str, dict] | None = None) -> dict:
        """Record a node's report; answer the replicas it should host."""
        HEARTBEATS.labels(node).inc()
        region = self.topology.region_of(node)
        if self.topology.heard_from(node):
            log.info("node %s (%s) is healthy: heartbeat received from %s, reporting %d "
                     "replicas", node, region, url, len(replicas))
            self.update_gauges()
            # Back after an outage: replicas a forced failover left behind rejoin.
            self.background.add(task := asyncio.create_task(self.rejoins.check(node)))
            task.add_done_callback(self.background.discard)
        if not self.topology.knows_url(node, url):
            before = self.topology.node_url(node)
            if await asyncio.to_thread(self.topology.remember_url, node, url) and url != before:
                log.info("node %s (%s): now reached at %s; the routing table follows", node,
                         region, url)
        self.status.record(node, replicas, peers or {})
        answer = await asyncio.to_thread(self.reconciler.answer, node, replicas)
        await self.lag.observe(node, replicas, answer["replicas"])
        return {**answer, "lease": {"ttl": self.deployment.lease_ttl}}

    async def watch_health(self) -> None:
        """Notice nodes whose heartbeats stopped, log it once, keep the gauges current, and
        now and then retry the rejoin of replicas a forced failover left behind."""
        beats = 0
        while True:
            await asyncio.sleep(self.deployment.heartbeat_interval / 2)
            beats += 1
            await self.outages.check()
            await self.healing.check()
            await self.node_failovers.check()
            if beats % REJOIN_CHECK_BEATS == 0:
                for node in self.deployment.nodes:
                    if self.topology.healthy(node):
                        await self.rejoins.check(node)
            for node, age in self.topology.newly_unhealthy():
                log.warning("node %s (%s) is unhealthy: no heartbeat for %.1f s, over the "
                            "limit of %.1f s (3 x heartbeat_interval); its replicas keep their "
                            "roles until an operation moves them", node,
                            self.topology.region_of(node), age, self.topology.health_limit)
            self.update_gauges()

    def update_gauges(self) -> None:
        for region in self.deployment.regions:
            HEALTHY_NODES.labels(region).set(self.topology.healthy_count(region))


def build_app(deployment: Deployment, store: Store | None = None,
              name: str | None = None) -> FastAPI:
    """The controller `name` (the deployment's first by default). It serves once elected
    leader (at once with SQLite); until then it forwards every call to the leader."""
    name = name or next(iter(deployment.controller_specs()))
    store = store or open_store(Path(deployment.data) / "controller",
                                {**deployment.store, "endpoints": deployment.store_endpoints()})
    ctl = Controller.open(deployment, store)
    leadership = Leadership(store, name, deployment.url(name), deployment.controller_lease_ttl)
    tasks: list[asyncio.Task] = []

    async def start_term() -> None:
        """Elected: take over what the last leader left (invariant 7), then decide."""
        live = await asyncio.to_thread(ctl.start)
        ctl.topology.listening()  # node health is unknown for the next heartbeat intervals
        ctl.operations.resume(live)
        tasks.extend([asyncio.create_task(ctl.watch_health()),
                      asyncio.create_task(ctl.delivery.run())])

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Store calls run in threads; the default pool (6 threads on this machine's 2
        # cores) would queue a region failover's parallel operations behind each other,
        # and those waiting writers are exactly what a group commit can merge.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(STORE_THREADS, thread_name_prefix="store"))
        campaign = asyncio.create_task(leadership.run(start_term))
        if leadership.etcd is None:  # SQLite leads at once: serve only once the term started
            await campaign
        try:
            yield
        finally:
            for task in (campaign, *tasks):
                task.cancel()
            await asyncio.gather(campaign, *tasks, return_exceptions=True)
            await ctl.operations.stop()
            await asyncio.to_thread(leadership.resign)  # a follower need not wait the ttl
            await ctl.stop()
            log.info("%s: stopped", name)

    app = FastAPI(title="Tandem controller", lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)
    app.state.controller = ctl
    install_error_handlers(app)
    install_metrics(app, deployment.token, deployment.secret)
    install_control_plane(app, deployment, store, leadership)  # /healthz, /v1/control-plane
    install_routes(app, ctl)
    install_reseed(app, ctl)  # POST /v1/environments/{env}/replicas/{region}/reseed
    install_sync(app, ctl)  # POST /internal/v1/environments/{env}/sync
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    # Outermost: a controller that does not lead passes calls on before doing anything.
    app.add_middleware(FollowerForward, leadership=leadership, max_body_bytes=MAX_BODY_BYTES)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tandemdb.controller",
                                     description="Run the Tandem controller of a deployment.")
    process.add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # else one line per node call or delivery
    deployment, name = process.identify(parser, args, "controller")
    host, port = deployment.address(name)
    # Long polls (routing, events, an operation's end) get 503 as soon as the stop begins;
    # other calls finish within a short grace.
    serve(build_app(deployment, name=name), name, host=host, port=port,
          workers=1, log_config=None, access_log=False,
          timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS)
