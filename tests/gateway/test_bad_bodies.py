"""Bodies too deep or too large get a clear 400 or 413 wherever they are read: the gateway,
the node's data API and the controller, all real processes (issue 9, item 5: `params`
nested 5,000 deep was a RecursionError, a 500)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tandemdb.common.http import MAX_JSON_DEPTH, SECRET_HEADER, json_depth
from tandemdb.testing import LocalDeployment

from .cluster import deployed as running
from .conftest import CLUSTER_BODY_LIMIT

DEEP = 5000


def nested(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalDeployment]:
    with running(tmp_path_factory.mktemp("bodies") / "data",
                 max_body_bytes=CLUSTER_BODY_LIMIT) as deployment:
        tandem = deployment.client
        tandem.create_environment("acme", region="west")
        tandem.sql("acme", "CREATE TABLE t(a)")
        yield deployment


def refused(answer: httpx.Response, status: int = 400, code: str = "bad_request") -> str:
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["code"] == code
    return answer.json()["error"]["message"]


def sql_body(params: str, extra: str = "") -> bytes:
    statement = '{"sql": "INSERT INTO t VALUES (?)", "params": ' + params + "}"
    return ('{"statements": [' + statement + "]" + extra + "}").encode()


def test_deep_params_are_400_at_the_node_and_at_the_gateway(deployed: LocalDeployment):
    url, token = deployed.deployment.gateway_url, deployed.deployment.token
    auth = {"Authorization": f"Bearer {token}", "content-type": "application/json"}
    sql = f"{url}/v1/environments/acme/sql"
    # Forwarded untouched: the node reads it.
    message = refused(httpx.post(sql, content=sql_body(nested(DEEP)), headers=auth))
    assert f"more than {MAX_JSON_DEPTH} deep" in message
    # With read_region the gateway reads it first.
    message = refused(httpx.post(sql, headers=auth,
                                 content=sql_body(nested(DEEP), ', "read_region": "east"')))
    assert f"more than {MAX_JSON_DEPTH} deep" in message
    # Straight to the node's data API, with the cluster secret.
    node = deployed.deployment.node_url("west-1")
    message = refused(httpx.post(f"{node}/v1/environments/acme/sql",
                                 content=sql_body(nested(DEEP)),
                                 headers={SECRET_HEADER: deployed.deployment.secret}))
    assert f"more than {MAX_JSON_DEPTH} deep" in message
    # Nothing ran, and the node still serves.
    tandem = deployed.client
    assert tandem.sql("acme", "SELECT count(*) FROM t")["results"][0]["rows"] == [[0]]
    assert "RecursionError" not in deployed.log("west-1") + deployed.log("gateway")


def test_depth_at_the_limit_is_not_refused_for_its_depth(deployed: LocalDeployment):
    url, token = deployed.deployment.gateway_url, deployed.deployment.token
    answer = httpx.post(f"{url}/v1/environments/acme/sql",
                        headers={"Authorization": f"Bearer {token}"},
                        content=sql_body(nested(MAX_JSON_DEPTH - 3)))  # 3 levels around it
    assert answer.status_code == 400, answer.text  # a list is no SQL value: refused for that
    assert "deep" not in answer.json()["error"]["message"]


def test_deep_control_bodies_are_400_at_the_controller(deployed: LocalDeployment):
    url, token = deployed.deployment.gateway_url, deployed.deployment.token
    body = '{"name": "deep", "region": ' + nested(DEEP) + "}"
    message = refused(httpx.post(f"{url}/v1/environments", content=body,
                                 headers={"Authorization": f"Bearer {token}"}))
    assert f"more than {MAX_JSON_DEPTH} deep" in message
    controller = deployed.deployment.controller_url
    heartbeat = '{"node": "west-1", "replicas": ' + nested(DEEP) + "}"
    message = refused(httpx.post(f"{controller}/internal/v1/heartbeat", content=heartbeat,
                                 headers={SECRET_HEADER: deployed.deployment.secret}))
    assert f"more than {MAX_JSON_DEPTH} deep" in message
    assert "RecursionError" not in deployed.log("controller")


def test_oversized_bodies_are_413_at_node_and_controller(deployed: LocalDeployment):
    secret = {SECRET_HEADER: deployed.deployment.secret}
    node = deployed.deployment.node_url("west-1")
    big = sql_body('["' + "x" * CLUSTER_BODY_LIMIT + '"]')
    refused(httpx.post(f"{node}/v1/environments/acme/sql", content=big, headers=secret),
            413, "body_too_large")
    huge = b'{"node": "west-1", "pad": "' + b"x" * (9 << 20) + b'"}'  # the controller's is 8 MiB
    refused(httpx.post(f"{deployed.deployment.controller_url}/internal/v1/heartbeat",
                       content=huge, headers=secret), 413, "body_too_large")


@pytest.mark.parametrize("raw,over", [
    (nested(MAX_JSON_DEPTH), False),
    (nested(MAX_JSON_DEPTH + 1), True),
    ('["' + "[" * 100 + '"]', False),  # brackets in a string are text
    ('["\\"' + "[" * 100 + '"]', False),  # an escaped quote does not end the string
    ("[" * 20 + "]" * 20 + "[" * 20 + "]" * 20, False),  # many brackets, shallow
    ('{"a": ' * 40 + "1" + "}" * 40, True),
])
def test_json_depth(raw: str, over: bool):
    assert (json_depth(raw.encode()) > MAX_JSON_DEPTH) is over
