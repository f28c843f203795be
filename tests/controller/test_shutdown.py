"""Stopping the controller while long polls are open: they are answered, 503 `shutting_down`,
and the log holds no traceback (issue 9, item 13: every stop logged `CancelledError …
timeout graceful shutdown exceeded`, because a routing or events long poll was open)."""

from __future__ import annotations

import threading
import time

import httpx

from tandemdb.common.http import SECRET_HEADER


def test_stop_answers_open_long_polls_and_logs_no_traceback(own_controller):
    ctl = own_controller.start()
    revision = ctl.http.get("/internal/v1/routing").json()["revision"]
    polls = {"routing": ("/internal/v1/routing", {"after": revision, "wait": 25}),
             "events": ("/v1/events", {"after": 10**9, "wait": 25})}
    answers: dict[str, httpx.Response | Exception] = {}

    def poll(name: str) -> None:
        path, params = polls[name]
        try:
            answers[name] = httpx.get(ctl.url + path, params=params, timeout=30,
                                      headers={SECRET_HEADER: ctl.deployment.secret})
        except httpx.HTTPError as exc:
            answers[name] = exc

    threads = [threading.Thread(target=poll, args=(name,)) for name in polls]
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # setup only: let both polls reach the controller and block there
    assert not answers, answers  # still waiting: nothing is new
    ctl.local.stop("controller")  # SIGTERM
    for thread in threads:
        thread.join(30)
    for name in polls:
        answer = answers[name]
        assert isinstance(answer, httpx.Response), (name, answer)
        assert answer.status_code == 503, (name, answer.text)
        assert answer.json()["error"]["code"] == "shutting_down"
        assert answer.headers["retry-after"] == "1"
    log = ctl.log()
    assert "controller: stopped" in log
    assert "Traceback" not in log and "CancelledError" not in log, log[-3000:]
    assert "graceful shutdown exceeded" not in log
