"""`tandem node outage NODE [--partition]` / `tandem node recover NODE` as a user runs them,
against a detached `tandem up --fault-proxy` with two nodes per region.

The node grace period is off, so that the controller fails nothing over: these tests are
about what the commands do (the process killed or its links cut, the node down in `tandem
node list`, healthy again after `recover`), not about the node failover that follows.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tandemdb.common.deployment import Deployment
from tandemdb.common.http import SECRET_HEADER
from tandemdb.common.outages import OUTAGE_FILE
from tandemdb.local import FAULT_PROXY, LocalDeployment, free_base_port, running_pids
from tandemdb.testing import LocalDeployment as Harness
from tandemdb.testing import poll_until

TANDEM = [sys.executable, "-m", "tandemdb.cli.main"]
# gateway, controller, 4 nodes, the proxy's control port, and per node 5 links: 4 from it (to
# the controller, to its local peer, to the 2 nodes of the pair), 1 to it from the controller
PORTS = 6 + 1 + 4 * 5


def tandem(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*TANDEM, *args], capture_output=True, text=True, timeout=120)
    if check:
        assert proc.returncode == 0, f"tandem {' '.join(args)} failed:\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data = str(tmp_path_factory.mktemp("node-outage") / "data")
    tandem("up", "--data", data, "--port", str(free_base_port(PORTS)), "--detach",
           "--nodes-per-region", "2", "--fault-proxy", "--node-grace-seconds", "off",
           "--grace-seconds", "off")
    try:
        poll_until(lambda: all(n["state"] == "healthy" for n in nodes(data).values()),
                   timeout=30, what="every node's first heartbeat")
        yield data
    finally:
        tandem("down", "--data", data, check=False)
    assert running_pids(Path(data)) == {}


def nodes(data: str) -> dict[str, dict]:
    listed = json.loads(tandem("node", "list", "--data", data, "--json").stdout)["nodes"]
    return {n["name"]: n for n in listed}


def state(data: str, node: str) -> str:
    return nodes(data)[node]["state"]


def links(data: str) -> dict[str, str]:
    """Each fault-proxy link's mode, from its control API."""
    deployment = Deployment.load(Path(data))
    answer = httpx.get(f"{deployment.fault_proxy_url}/v1/links",
                       headers={SECRET_HEADER: deployment.secret}).json()
    return {link["name"]: link["mode"] for link in answer["links"]}


def with_end(data: str, node: str) -> list[str]:
    """The proxy's links with `node` at one end, read from deployment.json."""
    return sorted(n for n in Deployment.load(Path(data)).links() if node in n.split(">"))


def fails(data: str, *args: str) -> str:
    """A refused command: exit status 1, one line on stderr, nothing on stdout."""
    proc = tandem(*args, "--data", data, check=False)
    assert proc.returncode == 1, proc
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_an_unknown_node_is_refused_naming_the_known_ones(data: str):
    pids = running_pids(Path(data))
    for command in (["node", "outage", "mars-1"], ["node", "outage", "mars-1", "--partition"],
                    ["node", "recover", "mars-1"]):
        line = fails(data, *command)
        assert line == ("error: unknown node 'mars-1': the nodes are west-1, west-2, "
                        "east-1, east-2"), line
    # A region's name is not a node's, and a node's is not a region's.
    assert "unknown node 'west'" in fails(data, "node", "outage", "west")
    assert "unknown region 'west-1'" in fails(data, "region", "outage", "west-1")
    assert not (Path(data) / OUTAGE_FILE).exists()
    assert running_pids(Path(data)) == pids, "nothing was killed"
    assert set(links(data).values()) == {"ok"}, "nothing was cut"


def test_kill_then_recover_one_node(data: str):
    pids = running_pids(Path(data))
    out = json.loads(tandem("node", "outage", "west-2", "--data", data, "--json").stdout)
    assert out == {"node": "west-2", "kind": "kill", "killed": ["west-2"]}
    assert set(running_pids(Path(data))) == set(pids) - {"west-2"}, "only west-2 was killed"
    assert LocalDeployment(Deployment.load(Path(data))).staged_out() == {"west-2"}
    poll_until(lambda: state(data, "west-2") == "down", timeout=30, what="west-2 down")
    assert {n: state(data, n) for n in ("west-1", "east-1", "east-2")} == dict.fromkeys(
        ("west-1", "east-1", "east-2"), "healthy")
    assert "node west-2 is already out (kill)" in fails(data, "node", "outage", "west-2")
    region = fails(data, "region", "outage", "west")
    assert "node west-2 is out (kill)" in region and "tandem node recover west-2" in region
    assert "region west is not staged out" in fails(data, "region", "recover", "west")

    back = json.loads(tandem("node", "recover", "west-2", "--data", data, "--json").stdout)
    assert back == {"node": "west-2", "started": ["west-2"]}
    assert running_pids(Path(data))["west-2"] != pids["west-2"], "a new west-2 process"
    poll_until(lambda: state(data, "west-2") == "healthy", timeout=30, what="west-2 healthy")
    assert "node west-2 is not staged out" in fails(data, "node", "recover", "west-2")
    assert json.loads((Path(data) / OUTAGE_FILE).read_text()) == {}


def test_partition_then_recover_one_node(data: str):
    pids = running_pids(Path(data))
    cut = with_end(data, "west-1")
    # to and from the controller, west-2 (its local peer), east-1 and east-2
    assert len(cut) == 8 and "west-1>west-2" in cut and "west-2>west-1" in cut
    out = json.loads(tandem("node", "outage", "west-1", "--partition", "--data", data,
                            "--json").stdout)
    assert out == {"node": "west-1", "kind": "partition", "cut": cut}
    modes = links(data)
    assert {n for n, mode in modes.items() if mode == "cut"} == set(cut)
    assert running_pids(Path(data)) == pids, "a partition kills nothing"
    poll_until(lambda: state(data, "west-1") == "down", timeout=30,
               what="west-1 down (its heartbeats cut)")
    node_url = Deployment.load(Path(data)).node_url("west-1")
    assert httpx.get(node_url + "/healthz").status_code == 200, "it still serves directly"

    back = json.loads(tandem("node", "recover", "west-1", "--data", data, "--json").stdout)
    assert back == {"node": "west-1", "healed": cut}
    assert set(links(data).values()) == {"ok"}
    poll_until(lambda: state(data, "west-1") == "healthy", timeout=30, what="west-1 healthy")


def test_a_link_another_partition_cuts_stays_cut(data: str):
    """west-1 and the whole of east partitioned: healing west-1 leaves its links to east
    cut, until east is recovered too."""
    tandem("node", "outage", "west-1", "--partition", "--data", data)
    east = json.loads(tandem("region", "outage", "east", "--partition", "--data", data,
                             "--json").stdout)["cut"]
    shared = sorted(set(with_end(data, "west-1")) & set(east))
    assert shared == ["east-1>west-1", "east-2>west-1", "west-1>east-1", "west-1>east-2"]
    healed = json.loads(tandem("node", "recover", "west-1", "--data", data, "--json").stdout)
    assert healed["healed"] == ["controller>west-1", "west-1>controller", "west-1>west-2",
                                "west-2>west-1"]
    assert {n for n, mode in links(data).items() if mode == "cut"} == set(east)
    tandem("region", "recover", "east", "--data", data)
    assert set(links(data).values()) == {"ok"}
    assert json.loads((Path(data) / OUTAGE_FILE).read_text()) == {}
    poll_until(lambda: {n["state"] for n in nodes(data).values()} == {"healthy"},
               timeout=30, what="every node healthy again")


def test_a_restarted_fault_proxy_cuts_a_staged_node_partition_again(tmp_path: Path):
    """The proxy reads outage.json at start: a node's partition outlives a restart of it,
    as a region's does, and cuts exactly that node's links."""
    with Harness.temporary(tmp_path, start=(), nodes_per_region=2,
                           fault_proxy=True) as local:
        (local.data / OUTAGE_FILE).write_text(json.dumps({"west-2": "partition"}))
        local.start(FAULT_PROXY)
        modes = links(str(local.data))
        assert {n for n, mode in modes.items() if mode == "cut"} == set(
            with_end(str(local.data), "west-2")) != set()
        assert modes["west-1>controller"] == "ok"
