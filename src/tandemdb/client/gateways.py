"""Several gateway URLs: which gateway a call goes to, when it moves on, and when it must not.

A deployment may run one gateway per region (`gateway-west`, `gateway-east`), each serving
the whole API. A client is given them all (`Client(["http://a:1", "http://b:2"], token)`,
`"http://a:1,http://b:2"`, or `TANDEM_URL` written the same way) and sends each call to one
gateway: the last one that answered (the choice sticks), then the others in their order.

A call moves on to the next gateway only when it cannot have run there:

- no connection could be made (refused, connect timeout, no free pooled connection), so not
  a byte of it was sent;
- the gateway answered 503 `unavailable` (it cannot reach the controller or the node): that
  code always means the call did not run (docs/api.md). A streamed upload is not sent again,
  since its first try consumed it; a body in hand is;
- a read (GET) got no answer after it was sent (a timeout, a broken connection): a read may
  run twice.

**A write whose outcome is unknown is never sent twice.** Once a write's bytes may have
reached a gateway (a timeout or a broken connection after the connection was made), it
raises `TandemError` with status 0, code `timeout` or `outcome_unknown`, and is not sent
again: not to that gateway, not to another. It may have run, so read back what it would
change before retrying it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from urllib.parse import urlsplit

import httpx

from .errors import TandemError, error_from

SAFE_METHODS = frozenset({"GET", "HEAD"})  # may run twice: they change nothing
# The request never left the client: it can go to another gateway, whatever it is.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# 503 codes that say "this gateway did not run the call and cannot serve it now".
MOVE_ON_CODES = frozenset({"unavailable", "controller_unavailable", "no_leader"})
EXAMPLE = "http://127.0.0.1:7070"


def parse_urls(urls: str | Sequence[str]) -> list[str]:
    """`"http://a:1,http://b:2"` or a list of URLs, each checked (http or https, a host) and
    without its trailing '/'. A bad one raises ValueError naming it."""
    whole = urls if isinstance(urls, str) else ",".join(map(str, urls))
    items = urls.split(",") if isinstance(urls, str) else list(urls)
    if not items or not whole.strip():
        raise ValueError(f"no gateway URL given: pass one or more, like {EXAMPLE}")
    return [_checked(item, whole) for item in items]


def _checked(item: object, whole: str) -> str:
    given = item.strip() if isinstance(item, str) else ""
    url = given.rstrip("/")
    if not given:
        raise ValueError(f"empty gateway URL in {whole!r}: separate URLs with single commas, "
                         f"with none at either end, like {EXAMPLE},http://127.0.0.1:7071")
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ValueError(f"gateway URL {given!r} has a bad port; write it like {EXAMPLE}") \
            from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"gateway URL {given!r} needs a scheme (http or https) and a host, "
                         f"like {EXAMPLE}")
    return url


def describe(exc: Exception) -> str:
    detail = str(exc)
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


class Gateways:
    """The URLs a client knows, and the one it sticks to (the last that answered)."""

    def __init__(self, urls: str | Sequence[str]) -> None:
        self.urls = parse_urls(urls)
        self.current = 0  # an index into urls; one int, so threads may share it

    @property
    def url(self) -> str:
        return self.urls[self.current]

    def walk(self, method: str, path: str, replayable: bool) -> Walk:
        """One call's way through the gateways; `replayable`: its body is in hand."""
        return Walk(self, method.upper(), path, replayable)


class Walk:
    """One call: the gateways to try in turn, what each try met, and what to raise.

    Used by both clients, so the sync and async calls take the same decisions:

        for url in walk:
            try: response = send(url + path)
            except httpx.TransportError as exc: walk.failed(url, exc); continue
            if not walk.moves_on(response): return response
        raise walk.give_up()
    """

    def __init__(self, gateways: Gateways, method: str, path: str, replayable: bool) -> None:
        self.gateways, self.method, self.path = gateways, method, path
        self.replayable = replayable
        count = len(gateways.urls)
        self.order = [(gateways.current + i) % count for i in range(count)]
        self.index = self.order[0]
        self.failures: list[tuple[str, httpx.TransportError]] = []  # tries with no answer
        self.refusal: TandemError | None = None  # the last "not now" a gateway answered

    def __iter__(self) -> Iterator[str]:
        for index in self.order:
            self.index = index
            yield self.gateways.urls[index]

    def failed(self, url: str, exc: httpx.TransportError) -> None:
        """A try that got no answer: note it and move on, or raise the unknown-outcome
        error for a write that may have reached the gateway (it is never sent again)."""
        if not isinstance(exc, NOT_SENT) and self.method not in SAFE_METHODS:
            raise unknown_outcome(url, self.method, self.path, exc) from None
        self.failures.append((url, exc))

    def moves_on(self, response: httpx.Response) -> bool:
        """True when the answer is a gateway's 503 "cannot serve now" for a call that can go
        elsewhere; False when it is the call's answer, and this gateway the one to keep."""
        if response.status_code == 503 and self.replayable:
            refusal = error_from(response)
            if refusal.code in MOVE_ON_CODES:
                self.refusal = refusal
                return True
        self.gateways.current = self.index
        return False

    def give_up(self) -> TandemError:
        """No gateway gave an answer: the last refusal if one answered, else why none did."""
        return self.refusal if self.refusal is not None else none_answered(self.failures)


def none_answered(failures: list[tuple[str, httpx.TransportError]]) -> TandemError:
    """Status 0: `timeout` when a gateway was reached but slow, else `unreachable`; it names
    every URL tried."""
    urls = ", ".join(url for url, _ in failures)
    if len(failures) == 1:
        details = describe(failures[0][1])
    else:
        details = "; ".join(f"{url}: {describe(exc)}" for url, exc in failures)
    if any(isinstance(exc, httpx.TimeoutException) for _, exc in failures):
        return TandemError(0, "timeout", f"no answer from {urls} in time ({details})")
    return TandemError(0, "unreachable", f"cannot reach Tandem at {urls} ({details}); is the "
                                         "deployment up? ('tandem up')")


def unknown_outcome(url: str, method: str, path: str, exc: httpx.TransportError) -> TandemError:
    """A write sent to `url` that got no answer: it may or may not have run."""
    timed_out = isinstance(exc, httpx.TimeoutException)
    what = "did not answer in time" if timed_out else "broke the connection before answering"
    return TandemError(0, "timeout" if timed_out else "outcome_unknown",
                       f"{url} {what} ({describe(exc)}) after {method} {path} was sent: it "
                       "may or may not have run, so it was not sent again, to this gateway "
                       "or another. Check its effect (read the rows or the file back) "
                       "before you retry it")
