"""`tandem up`'s control-plane flags (--store, --controllers, --witness, --gateways): a bad
value is one clear line naming the reason, nothing is planned or started; an etcd cluster
that does not answer is named within 10 s (issue 12, "Bad input"). What a good shape does
is checked through real deployments in tests/integration/test_control_plane*.py."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from tandemdb.common.deployment import Deployment
from tandemdb.common.layout import Shape

from .test_cli import fails_cleanly


@pytest.mark.parametrize("args,expected", [
    (["--controllers", "2", "--store", "etcd"],
     "--controllers must be odd, not 2: the controllers run one per site"),
    (["--controllers", "4", "--store", "etcd"], "--controllers must be odd, not 4"),
    (["--controllers", "0", "--store", "etcd"], "--controllers must be from 1 to 7, not 0"),
    (["--controllers", "9", "--store", "etcd"], "--controllers must be from 1 to 7, not 9"),
    (["--controllers", "3"], "--controllers 3 needs a store the controllers share: add "
                             "--store etcd"),
    (["--controllers", "5", "--store", "etcd"],
     "--controllers 5: the controllers run one per site, and this layout has 3 sites"),
    (["--store", "etcd", "--witness", "west"], "--witness 'west' is a region"),
    (["--store", "etcd", "--witness", "../x"], "--witness must be a site name"),
    (["--store", "mysql"], "--store must be sqlite, etcd, or etcd://HOST:PORT"),
    (["--store", "etcd://"], "write each etcd endpoint as HOST:PORT"),
    (["--store", "etcd://a:1,b"], "'b' is not"),
    (["--store", "etcd://a:99999"], "'a:99999' is not"),
    (["--gateways", "many"], "--gateways must be single or per-region, not 'many'"),
    (["--store", "etcd", "--fault-proxy"], "--fault-proxy stages partitions of one "
                                           "controller on sqlite"),
])
def test_up_refuses_a_bad_control_plane_before_starting_anything(
        tmp_path: Path, args: list[str], expected: str):
    data = tmp_path / "data"
    line = fails_cleanly(["up", *args, "--data", str(data), "--detach"], expected)
    assert expected in line
    assert not data.exists(), "nothing planned"


def test_an_etcd_that_does_not_answer_is_named_within_ten_seconds(tmp_path: Path):
    """One endpoint refuses connections, the other accepts and never answers."""
    refused = socket.socket()
    refused.bind(("127.0.0.1", 0))  # bound, never listening: connection refused
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.extend(silent.accept() for _ in range(1)),
                     daemon=True).start()
    a, b = refused.getsockname()[1], silent.getsockname()[1]
    data = tmp_path / "data"
    started = time.monotonic()
    try:
        line = fails_cleanly(["up", "--store", f"etcd://127.0.0.1:{a},127.0.0.1:{b}",
                              "--data", str(data), "--detach"], "does not answer")
    finally:
        refused.close()
        silent.close()
    assert time.monotonic() - started < 10.0
    assert f"http://127.0.0.1:{a}" in line and f"http://127.0.0.1:{b}" in line
    assert not data.exists(), "nothing planned"


def test_the_etcd_shape_has_three_sites_of_one_member_and_one_controller_each(tmp_path):
    d = Deployment.plan(tmp_path, [("west", "east")], 2, 20000, Shape.parse("etcd"))
    assert {m["site"] for m in d.etcd_members().values()} == {"west", "east", "witness"}
    assert list(d.controller_specs()) == ["controller-west", "controller-east",
                                          "controller-witness"]
    assert list(d.gateway_specs()) == ["gateway-west", "gateway-east"]
    assert d.gateway_url == d.gateway_urls()[0] and len(d.gateway_urls()) == 2
    ports = d.ports()
    assert len(ports) == len(set(ports)), "every process listens on a port of its own"
    assert max(ports) - 20000 + 1 == Deployment.ports_needed(
        [("west", "east")], 2, False, Shape.parse("etcd"))
    east = d.controller_links("east-1")
    assert east[0] == d.url("controller-east") and len(east) == 3, "its own site's first"


def test_sqlite_keeps_one_controller_and_gateway_unless_asked(tmp_path):
    d = Deployment.plan(tmp_path, [("west", "east")], 1, 20000, Shape.parse("sqlite"))
    assert list(d.controller_specs()) == ["controller"] and d.etcd_members() == {}
    assert list(d.gateway_specs()) == ["gateway"]
    per_region = Deployment.plan(tmp_path, [("west", "east")], 1, 20000,
                                 Shape.parse("sqlite", gateways="per-region"))
    assert list(per_region.gateway_specs()) == ["gateway-west", "gateway-east"]
