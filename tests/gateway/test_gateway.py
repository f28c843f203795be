"""The gateway process on its own: health, auth, body limit, path tricks, no controller.

With no controller behind it the gateway must still start and serve /healthz, keep trying
to load routing (and say so in its log), and answer every call with a clear error.
"""

from __future__ import annotations

import http.client
import json
import time

import httpx
import pytest

from tandemdb.testing import LocalDeployment, poll_until

from .conftest import SMALL_BODY_LIMIT

PROTECTED = [
    ("GET", "/v1/regions"),
    ("GET", "/v1/environments"),
    ("POST", "/v1/environments"),
    ("GET", "/v1/environments/acme"),
    ("DELETE", "/v1/environments/acme"),
    ("POST", "/v1/environments/acme/sql"),
    ("PUT", "/v1/environments/acme/files/a.txt"),
    ("GET", "/v1/environments/acme/files/a.txt"),
    ("DELETE", "/v1/environments/acme/files/a.txt"),
    ("GET", "/v1/environments/acme/files"),
    ("GET", "/v1/environments/acme/checksum"),
    ("GET", "/v1/operations/42"),
]


def raw_request(url: str, method: str, path: str, headers: dict | None = None,
                body: bytes | None = None) -> tuple[int, dict]:
    """Send a path exactly as written (httpx would normalise '..' away)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_starts_healthy_without_controller_and_logs_routing_retries(gateway_only: LocalDeployment):
    answer = httpx.get(f"{gateway_only.deployment.gateway_url}/healthz")
    assert answer.status_code == 200
    health = answer.json()
    assert health["ok"] is True and health["component"] == "gateway"
    assert health["routing"]["loaded"] is False
    poll_until(lambda: "cannot poll the controller" in gateway_only.log("gateway"), 5, 0.1,
               "the gateway to log its routing retries")
    assert gateway_only.deployment.controller_url in gateway_only.log("gateway")
    assert gateway_only.processes["gateway"].poll() is None  # still running


def test_metrics_need_the_token(gateway_only: LocalDeployment):
    url = gateway_only.deployment.gateway_url
    httpx.get(f"{url}/v1/regions")  # one 401, to be counted
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-Tandem-Secret": "wrong"}):
        refused = httpx.get(f"{url}/metrics", headers=headers)
        assert refused.status_code == 401, refused.text
        assert refused.json()["error"]["code"] == "unauthorized"
        assert "tandem_" not in refused.text
    answer = httpx.get(f"{url}/metrics", headers=auth(gateway_only))
    assert answer.status_code == 200
    assert 'tandem_http_requests_total{method="GET",route="/v1/regions",status="401"}' \
        in answer.text
    assert "tandem_gateway_routing_failures_total" in answer.text


@pytest.mark.parametrize("method,path", PROTECTED)
def test_every_v1_call_needs_the_token(gateway_only: LocalDeployment, method: str, path: str):
    url = gateway_only.deployment.gateway_url
    token = gateway_only.deployment.token
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {token}"},
                    {"Authorization": token}):
        answer = httpx.request(method, url + path, headers=headers, content=b"{}")
        assert answer.status_code == 401, (headers, answer.text)
        assert answer.json()["error"]["code"] == "unauthorized"


def auth(deployed: LocalDeployment) -> dict:
    return {"Authorization": f"Bearer {deployed.deployment.token}"}


def test_data_call_before_routing_loads_is_503_not_404(gateway_only: LocalDeployment):
    url = gateway_only.deployment.gateway_url
    started = time.monotonic()
    answer = httpx.post(f"{url}/v1/environments/acme/sql", headers=auth(gateway_only),
                        json={"statements": [{"sql": "SELECT 1"}]}, timeout=10)
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "unavailable"
    assert "routing" in answer.json()["error"]["message"]
    assert answer.headers["retry-after"] == "1"
    assert time.monotonic() - started < 5  # waited briefly for routing, then answered


def test_control_call_without_controller_is_503(gateway_only: LocalDeployment):
    url = gateway_only.deployment.gateway_url
    answer = httpx.get(f"{url}/v1/environments", headers=auth(gateway_only))
    assert answer.status_code == 503
    error = answer.json()["error"]
    assert error["code"] == "unavailable"
    assert gateway_only.deployment.controller_url in error["message"]


def test_oversized_bodies_get_413(gateway_only: LocalDeployment):
    url = gateway_only.deployment.gateway_url
    big = b"x" * (SMALL_BODY_LIMIT + 1)
    for method, path in [("POST", "/v1/environments/acme/sql"),
                         ("PUT", "/v1/environments/acme/files/big.bin"),
                         ("POST", "/v1/environments")]:
        answer = httpx.request(method, url + path, headers=auth(gateway_only), content=big)
        assert answer.status_code == 413, (path, answer.text)
        assert answer.json()["error"]["code"] == "body_too_large"

    def chunks():  # no Content-Length: the limit must hold while the body streams in
        for _ in range(8):
            yield b"y" * 1024

    for path in ("/v1/environments/acme/sql", "/v1/environments"):
        answer = httpx.post(url + path, headers=auth(gateway_only), content=chunks())
        assert answer.status_code == 413, (path, answer.text)
        assert answer.json()["error"]["code"] == "body_too_large"
    # Just under the limit is not refused for its size (it meets the missing routing).
    answer = httpx.post(f"{url}/v1/environments/acme/sql", headers=auth(gateway_only),
                        content=b" " * SMALL_BODY_LIMIT, timeout=10)
    assert answer.status_code == 503


@pytest.mark.parametrize("path,code", [
    ("/v1/environments/acme/files/../../../internal/v1/routing", "invalid_path"),
    ("/v1/environments/acme/files/a/%2e%2e/%2e%2e/x", "invalid_path"),
    ("/v1/environments/acme/files/a//b", "invalid_path"),
    ("/v1/environments/acme/files/", "invalid_path"),
    ("/v1/../internal/v1/routing", "bad_request"),
    ("/v1/environments/../../internal/v1/heartbeat", "bad_request"),
])
def test_path_tricks_are_refused_before_any_forward(gateway_only: LocalDeployment, path: str,
                                                    code: str):
    status, body = raw_request(gateway_only.deployment.gateway_url, "GET", path,
                               auth(gateway_only))
    assert status == 400, body
    assert body["error"]["code"] == code


def test_wrong_method_on_a_data_path_is_405(gateway_only: LocalDeployment):
    url = gateway_only.deployment.gateway_url
    answer = httpx.get(f"{url}/v1/environments/acme/sql", headers=auth(gateway_only))
    assert answer.status_code == 405
    assert answer.json()["error"]["code"] == "method_not_allowed"


def test_unknown_public_path_is_404_json(gateway_only: LocalDeployment):
    answer = httpx.get(f"{gateway_only.deployment.gateway_url}/nothing/here")
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "not_found"
