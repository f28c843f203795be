"""Small helpers shared by the operations, events and webhooks tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(probe: Callable[[], T], timeout: float = 10.0, interval: float = 0.05,
             what: str = "condition") -> T:
    """Call `probe` until it answers something truthy; that answer, or AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout} s (last: {value!r})")
        time.sleep(interval)


def events_of(ctl, after: int = 0, **params) -> dict:
    response = ctl.http.get("/v1/events", params={"after": after, **params})
    assert response.status_code == 200, response.text
    return response.json()


def operation(ctl, op_id: str) -> dict:
    response = ctl.http.get(f"/v1/operations/{op_id}")
    assert response.status_code == 200, response.text
    return response.json()
