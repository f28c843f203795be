"""`tandem node list` against a running deployment (controller, west-1, east-1, gateway)."""

from __future__ import annotations

from tandemdb.testing import LocalDeployment

from .test_cli_end_to_end import tandem, tandem_json


def test_node_list_table_and_json(cluster: LocalDeployment):
    tandem(cluster, "env", "create", "nodes-acme", "--region", "west")
    listed = tandem_json(cluster, "node", "list")["nodes"]
    by_name = {n["name"]: n for n in listed}
    assert set(by_name) == set(cluster.deployment.nodes)
    west, east = cluster.node_of("west"), cluster.node_of("east")
    assert (by_name[west]["region"], by_name[west]["state"]) == ("west", "healthy")
    assert (by_name[west]["primaries"], by_name[west]["secondaries"]) == (1, 0)
    assert (by_name[east]["primaries"], by_name[east]["secondaries"]) == (0, 1)
    table = tandem(cluster, "node", "list")
    assert "2 node(s)" in table
    row = next(line for line in table.splitlines() if line.split()[:1] == [west])
    assert row.split()[1:5] == ["west", "healthy", "1", "0"], row
