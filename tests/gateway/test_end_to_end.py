"""Through the gateway to real nodes: controller, west-1, east-1 and the gateway running.

One environment is created, written on its primary (west), read back from its secondary
(east) with read-your-writes, given files, and compared replica against replica.
"""

from __future__ import annotations

import pytest

from tandemdb.client import Client, TandemError
from tandemdb.testing import LocalDeployment, poll_until

from .conftest import CLUSTER_BODY_LIMIT


def failure(call) -> TandemError:
    with pytest.raises(TandemError) as caught:
        call()
    return caught.value


def test_end_to_end_through_gateway(cluster: LocalDeployment):
    tandem = cluster.client
    regions = {r["name"]: r for r in tandem.regions()}
    assert set(regions) == {"west", "east"}
    assert regions["west"]["pair"] == "east"

    view = tandem.create_environment("acme", region="west")
    assert (view["name"], view["type"], view["home_region"]) == ("acme", "production",
                                                                 "west")
    assert {r["region"]: r["role"] for r in view["replicas"]} == {"west": "primary",
                                                                  "east": "secondary"}
    assert "acme" in [e["name"] for e in tandem.environments()]
    assert tandem.environment("acme")["primary_region"] == "west"

    # Rows: write on the primary, read them back from the secondary (read-your-writes).
    created = tandem.sql("acme", ["CREATE TABLE orders(id INTEGER PRIMARY KEY, item TEXT)",
                                  ("INSERT INTO orders(item) VALUES (?)", ["anvil"])])
    assert created["region"] == "west"
    inserted = tandem.sql("acme", "INSERT INTO orders(item) VALUES (?)", ["rocket"])
    assert inserted["lsn"] > created["lsn"]
    assert inserted["results"][0]["rows_affected"] == 1
    read = tandem.sql("acme", "SELECT item FROM orders ORDER BY id", read_region="east",
                      min_lsn=inserted["lsn"])
    assert read["region"] == "east"
    assert read["results"][0]["rows"] == [["anvil"], ["rocket"]]
    assert read["lsn"] >= inserted["lsn"]
    on_primary = tandem.sql("acme", "SELECT count(*) FROM orders")
    assert on_primary["region"] == "west" and on_primary["results"][0]["rows"] == [[2]]

    # The secondary refuses writes; bad input changes nothing.
    refused = failure(lambda: tandem.sql("acme", "INSERT INTO orders(item) VALUES ('x')",
                                         read_region="east"))
    assert refused.status == 409
    assert failure(lambda: tandem.sql("acme", "SELEC nonsense")).status == 400
    assert failure(lambda: tandem.sql("globex", "SELECT 1")).status == 404
    assert failure(lambda: tandem.sql("acme", "SELECT 1", read_region="mars")).status == 400

    # Files: put (streamed through), get from both regions, list, remove.
    content = bytes(range(256)) * 4096  # 1 MiB
    put = tandem.put_file("acme", "invoices/2024/1.pdf", content)
    assert (put["path"], put["size"], put["region"]) == ("invoices/2024/1.pdf",
                                                         len(content), "west")
    tandem.put_file("acme", "readme.txt", "hello")
    assert tandem.get_file("acme", "invoices/2024/1.pdf") == content
    assert tandem.get_file("acme", "invoices/2024/1.pdf", read_region="east",
                           min_lsn=put["lsn"]) == content
    listed = tandem.list_files("acme", prefix="invoices/")
    assert [f["path"] for f in listed] == ["invoices/2024/1.pdf"]
    assert listed[0]["size"] == len(content)
    assert {f["path"] for f in tandem.list_files("acme")} == {"invoices/2024/1.pdf",
                                                             "readme.txt"}
    removed = tandem.delete_file("acme", "readme.txt")
    assert removed["deleted"] == "readme.txt"
    assert failure(lambda: tandem.get_file("acme", "readme.txt")).status == 404
    assert failure(lambda: tandem.get_file("acme", "../escape")).code == "invalid_path"

    # After catch-up both replicas hold the same rows and files (invariant 4).
    def equal_checksums():
        west, east = tandem.checksum("acme", "west"), tandem.checksum("acme", "east")
        return west if west["total"] == east["total"] and west["lsn"] == east["lsn"] \
            else None

    agreed = poll_until(equal_checksums, 10, 0.1, "equal checksums in west and east")
    assert agreed["lsn"] == removed["lsn"]
    assert tandem.checksum("acme")["total"] == agreed["total"]  # default: the primary

    # Lag shows up in the view, and reaches zero.
    def caught_up():
        view = tandem.environment("acme")
        east = next(r for r in view["replicas"] if r["region"] == "east")
        return east.get("lag_entries") == 0 and east.get("applied_lsn") == removed["lsn"]

    poll_until(caught_up, 10, 0.1, "east's lag to reach zero")

    # Deleting takes the environment out of routing at once.
    assert tandem.delete_environment("acme")["deleted"] == "acme"
    assert failure(lambda: tandem.sql("acme", "SELECT 1")).status == 404
    assert failure(lambda: tandem.environment("acme")).status == 404


def test_new_environment_is_routable_as_soon_as_created(cluster: LocalDeployment):
    """The create answer waits for routing, so the very next call never meets a 404."""
    tandem = cluster.client
    for i in range(5):
        name = f"fresh-{i}"
        tandem.create_environment(name, type="basic")
        assert tandem.sql(name, "SELECT 1")["results"][0]["rows"] == [[1]]


def test_wrong_token_never_reaches_a_node(cluster: LocalDeployment):
    with Client(cluster.deployment.gateway_url, "wrong") as intruder:
        assert failure(lambda: intruder.sql("acme", "SELECT 1")).status == 401
        assert failure(intruder.environments).status == 401


def test_oversized_streamed_upload_is_refused_and_stores_nothing(cluster: LocalDeployment):
    tandem = cluster.client
    tandem.create_environment("acme")

    def chunks():  # no Content-Length: the gateway must count as the body streams
        for _ in range(3 * CLUSTER_BODY_LIMIT // 65536):
            yield b"z" * 65536

    refused = failure(lambda: tandem.put_file("acme", "big.bin", chunks()))
    assert (refused.status, refused.code) == (413, "body_too_large")
    by_length = failure(lambda: tandem.put_file("acme", "big.bin",
                                                b"z" * (CLUSTER_BODY_LIMIT + 1)))
    assert by_length.status == 413
    assert tandem.list_files("acme") == []
    assert tandem.checksum("acme")["lsn"] == 0  # nothing was committed
    # The gateway and the node are fine afterwards.
    assert tandem.put_file("acme", "small.bin", b"ok")["size"] == 2
    assert tandem.get_file("acme", "small.bin") == b"ok"
