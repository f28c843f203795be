"""Operations over HTTP: records with timed steps, listing, errors; and invariant 7 (an
operation cut off by SIGKILL of the controller resumes at the next start)."""

from __future__ import annotations

import contextlib
import socket
import threading
from datetime import datetime

import httpx

from .waiting import events_of, operation, wait_for

CREATE_STEPS = ["record", "create-primary", "create-secondary", "activate"]
DELETE_STEPS = ["mark-deleting", "drop-primary", "drop-secondary", "remove-record"]


def assert_finished_steps(op: dict, names: list[str]) -> None:
    assert [s["name"] for s in op["steps"]] == names
    for step in op["steps"]:
        assert step["state"] == "succeeded", step
        started = datetime.fromisoformat(step["started_at"])
        finished = datetime.fromisoformat(step["finished_at"])
        assert started <= finished and step["detail"]
    assert op["state"] == "succeeded" and op["error"] is None
    assert op["started_at"] <= op["finished_at"] == op["steps"][-1]["finished_at"]


def newest_operation(ctl) -> dict | None:
    ops = ctl.http.get("/v1/operations", params={"limit": 1}).json()["operations"]
    return ops[0] if ops else None


def test_create_and_delete_are_operations_with_timed_steps(controller):
    response = controller.create(name="op-env", rpo_limit_seconds=60)
    assert response.status_code == 201, response.text
    op_id = response.headers["X-Tandem-Operation"]
    assert op_id.startswith("op-") and response.json()["operation"] == op_id
    op = operation(controller, op_id)
    assert (op["id"], op["kind"], op["target"]) == (op_id, "environment.create", "op-env")
    assert op["params"]["type"] == "production" and op["params"]["rpo_limit_seconds"] == 60
    assert_finished_steps(op, CREATE_STEPS)
    assert "recorded as creating" in op["steps"][0]["detail"]
    assert "could not reach west-1" in op["steps"][1]["detail"]  # no node listens here
    assert op["result"] == {"environment": "op-env", "replicas": 2, "replicas_confirmed": []}
    log = controller.log()
    for i, name in enumerate(CREATE_STEPS, 1):
        assert f"({op_id} environment.create, step {i} of 4: {name})" in log

    deleted = controller.http.delete("/v1/environments/op-env")
    assert deleted.status_code == 200 and deleted.json() == {"deleted": "op-env"}
    delete_id = deleted.headers["X-Tandem-Operation"]
    assert delete_id > op_id  # ids sort by age
    op = operation(controller, delete_id)
    assert (op["kind"], op["target"]) == ("environment.delete", "op-env")
    assert_finished_steps(op, DELETE_STEPS)
    assert op["steps"][-1]["detail"] == "environment op-env (epoch 1): deleted, record removed"


def test_list_newest_first_and_bad_input(controller):
    for name in ["op-list-a", "op-list-b"]:
        assert controller.create(name=name, type="basic").status_code == 201
    ops = controller.http.get("/v1/operations", params={"limit": 2}).json()["operations"]
    assert [o["target"] for o in ops] == ["op-list-b", "op-list-a"]
    assert ops[0]["id"] > ops[1]["id"]
    everything = controller.http.get("/v1/operations").json()["operations"]
    assert 2 <= len(everything) <= 20
    assert [o["id"] for o in everything] == sorted((o["id"] for o in everything), reverse=True)

    # Refused requests leave no operation behind (invariant 8).
    before = newest_operation(controller)["id"]
    assert controller.create(name="Bad_Name").status_code == 400
    assert controller.create(name="op-list-a").status_code == 409
    assert controller.http.delete("/v1/environments/op-ghost").status_code == 404
    assert newest_operation(controller)["id"] == before

    for op_id in ["op-999999", "nope", "..%2Fsecrets"]:
        response = controller.http.get(f"/v1/operations/{op_id}")
        assert response.status_code == 404, op_id
        assert response.json()["error"]["code"] == "not_found"
    for params, fragment in [({"limit": 0}, "invalid limit"), ({"limit": "x"}, "invalid limit"),
                             ({"limit": 5001}, "invalid limit"), ({"sort": "asc"}, "unknown")]:
        response = controller.http.get("/v1/operations", params=params)
        assert response.status_code == 400, params
        assert fragment in response.json()["error"]["message"]
    for path in ["/v1/operations", "/v1/operations/op-000001"]:
        assert httpx.get(f"{controller.url}{path}").status_code == 401


@contextlib.contextmanager
def silent_listener():
    """A socket that accepts connections (in the kernel's backlog) and never answers: an
    admin call to it hangs until its timeout, which holds an operation mid-step."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", sock
    finally:
        sock.close()


def call_in_background(method: str, url: str, secret: str, **kwargs) -> threading.Thread:
    """A request whose answer the test does not wait for (the controller dies under it)."""
    def call() -> None:
        with contextlib.suppress(httpx.HTTPError):
            httpx.request(method, url, headers={"X-Tandem-Secret": secret}, timeout=30,
                          **kwargs)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    return thread


def held_at(ctl, target: str, step: str) -> dict | None:
    op = newest_operation(ctl)
    if op and op["target"] == target:
        running = [s["name"] for s in op["steps"] if s["state"] == "running"]
        return op if running == [step] else None
    return None


def test_create_cut_off_by_sigkill_resumes_and_succeeds(own_controller):
    """Invariant 7: SIGKILL while `create-primary` waits on the node; at the next start the
    operation runs that step again, and a real node ends up hosting the replica."""
    ctl = own_controller.start()
    with silent_listener() as (hole, _):
        ctl.heartbeat("west-1", url=hole)  # the controller now calls west-1 there
        caller = call_in_background("POST", f"{ctl.url}/v1/environments",
                                    ctl.deployment.secret, json={"name": "held",
                                                                 "type": "basic"})
        op = wait_for(lambda: held_at(ctl, "held", "create-primary"), 5,
                      what="create-primary running")
        ctl.kill()
    caller.join(5)
    # What the dead controller left: the record `creating`, the step `running`.
    with ctl.open_store() as store:
        assert store.get("environments/held").value["state"] == "creating"
        left = store.get(f"operations/{op['id']}").value
        assert [s["state"] for s in left["steps"]] == ["succeeded", "running", "pending"]
    ctl.local.start("west-1")  # the real node, from now on reporting its real URL
    ctl.start()

    done = wait_for(lambda: operation(ctl, op["id"])["state"] in ("succeeded", "failed")
                    and operation(ctl, op["id"]), 15, what="the resumed operation ends")
    assert_finished_steps(done, ["record", "create-primary", "activate"])
    assert done["steps"][1]["attempts"] == 2 and done["steps"][0]["attempts"] == 1
    assert (f"operation {op['id']} (environment.create held): resumed at step 2 of 3 "
            "(create-primary, running when the previous run stopped)") in ctl.log()
    view = ctl.http.get("/v1/environments/held").json()
    assert (view["state"], view["operation"], view["epoch"]) == ("active", op["id"], 1)
    assert [(r["node"], r["role"]) for r in view["replicas"]] == [("west-1", "primary")]
    created = [e for e in events_of(ctl)["events"] if e["environment"] == "held"]
    assert [(e["type"], e["operation"]) for e in created] == [
        ("environment.created", op["id"])]
    # The catalog and the node agree: the node hosts the primary (the resumed PUT or
    # its heartbeat answer created it).
    node_url = ctl.deployment.node_url("west-1")

    def hosted() -> dict | None:
        answer = httpx.get(f"{node_url}/internal/v1/replicas/held",
                           headers={"X-Tandem-Secret": ctl.deployment.secret})
        return answer.json() if answer.status_code == 200 else None

    assert wait_for(hosted, 10, what="west-1 hosts held")["role"] == "primary"


def test_delete_cut_off_by_sigkill_resumes_and_removes_the_record(own_controller):
    ctl = own_controller.start()
    assert ctl.create(name="leaving", type="basic").status_code == 201
    with silent_listener() as (hole, _):
        ctl.heartbeat("west-1", url=hole)
        call_in_background("DELETE", f"{ctl.url}/v1/environments/leaving",
                           ctl.deployment.secret)
        op = wait_for(lambda: held_at(ctl, "leaving", "drop-primary"), 5,
                      what="drop-primary running")
        assert ctl.http.get("/v1/environments/leaving").json()["state"] == "deleting"
        ctl.kill()
    ctl.start()  # the hole is closed now: the resumed drop finds west-1 unreachable

    done = wait_for(lambda: operation(ctl, op["id"])["state"] != "running"
                    and operation(ctl, op["id"]), 15, what="the resumed operation ends")
    assert_finished_steps(done, ["mark-deleting", "drop-primary", "remove-record"])
    assert done["steps"][1]["attempts"] == 2
    assert "heartbeat answer no longer lists it" in done["steps"][1]["detail"]
    assert ctl.http.get("/v1/environments/leaving").status_code == 404
    gone = [e for e in events_of(ctl)["events"] if e["environment"] == "leaving"]
    assert [e["type"] for e in gone] == ["environment.created", "environment.deleted"]
    assert gone[1]["operation"] == op["id"]


def test_an_operation_of_an_unknown_kind_fails_clearly_at_start(own_controller):
    ctl = own_controller.start()
    ctl.kill()
    with ctl.open_store() as store:
        store.put("operations/op-000042", {
            "id": "op-000042", "kind": "environment.teleport", "target": "acme",
            "state": "running", "params": {}, "started_at": "2026-01-01T00:00:00.000Z",
            "finished_at": None, "result": None, "error": None,
            "steps": [{"name": "beam", "state": "running", "started_at": None,
                       "finished_at": None, "detail": None, "attempts": 1}]})
    ctl.start()
    op = wait_for(lambda: operation(ctl, "op-000042")["state"] == "failed"
                  and operation(ctl, "op-000042"), 5, what="op-000042 failed")
    assert op["error"]["code"] == "unknown_kind"
    assert "environment.teleport" in op["error"]["message"] and op["finished_at"]
