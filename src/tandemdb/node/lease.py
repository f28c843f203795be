"""The node's lease from the controller (docs/leases.md): primaries write only while it holds.

The controller grants a lease of `ttl` seconds with every heartbeat answer. The node counts
it from the moment it *sent* that heartbeat (`sent_at`, taken just before the request), not
from when the answer arrived, so the node's lease always ends before the controller's view
of it: the controller can only have answered after `sent_at`. A safety margin is taken off
the end on top of that:

    valid while  clock() < sent_at + ttl - margin,   margin = min(max(0.5 s, 10% of ttl), ttl / 2)

The 10% covers the rate difference between the node's and the controller's clocks; the
0.5 s floor covers the time between a write's lease check and its commit (the statements
and the fsync of one group). The cap at half the ttl only matters for the short ttls of
tests, where a 0.5 s floor would eat most of the lease. Expiry is judged only by the node's
own monotonic clock: no wall-clock time crosses the network.

**Failsafe** (docs/leases.md, "The failsafe"; cf. Patroni's failsafe mode): a primary
whose controller cannot be reached keeps writing while its geo-secondary keeps pulling from
it at the same epoch. Every stream answer carries a `token`, this node's clock when the
answer was made; a secondary echoes the last token it received in its next pull, along with
the environments it vouches for. Such a pull proves the secondary still vouched after the
token was made, so it extends that environment's failsafe lease to

    token + ttl - margin        (the same ttl and margin as above, on the same clock)

The controller, before a forced promotion, makes the secondary stop vouching and then waits
ttl (plus slack) after it confirmed: whatever pull was still in flight carries a token from
before that, so the old primary's failsafe lease has ended by then (docs/leases.md).

A `Lease` with ttl 0 is off (`required` is False, `valid()` always True): only the node
tests, which run nodes without a controller, configure that.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable

MARGIN_FLOOR = 0.5  # seconds: a check-to-commit delay, whatever the ttl
MARGIN_FRACTION = 0.1  # of the ttl: clock-rate drift between node and controller


def margin_for(ttl: float) -> float:
    """The safety margin taken off a lease of `ttl` seconds (see the module docstring)."""
    return min(max(MARGIN_FLOOR, MARGIN_FRACTION * ttl), ttl / 2)


def usable_ttl(raw: object) -> float | None:
    """The ttl of a heartbeat answer's `lease` object, or None if it grants nothing."""
    ttl = raw.get("ttl") if isinstance(raw, dict) else None
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not math.isfinite(ttl) \
            or ttl <= 0:
        return None
    return float(ttl)


class Lease:
    """One node's lease: granted by heartbeat answers, judged by the node's monotonic clock.

    Read from the event loop and from worker threads (a commit re-checks it under the
    engine's lock); the only shared state is one float, replaced whole on each grant.
    """

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = float(ttl)  # as configured (deployment.json lease_ttl); 0 = off
        self.clock = clock
        self.started_at = clock()
        self.expires_at: float | None = None  # on `clock`; None until the first grant
        self.granted_at: float | None = None  # sent_at of the heartbeat that renewed it
        self.granted_ttl: float | None = None  # the ttl that answer granted
        # Tokens of another process (a restarted node) are never taken: a stale echo of a
        # past incarnation says nothing about this one's writes.
        self.incarnation = secrets.token_hex(8)

    @property
    def required(self) -> bool:
        return self.ttl > 0

    @property
    def margin(self) -> float:
        return margin_for(self.ttl) if self.required else 0.0

    def grant(self, sent_at: float, ttl: float) -> float:
        """Renew from a heartbeat sent at `sent_at` whose answer granted `ttl` seconds.

        The new expiry replaces the old one rather than extending it: if a (restarted)
        controller now grants less, the node must not hold on to more than it promises.
        Answers the new expiry."""
        self.granted_at, self.granted_ttl = sent_at, ttl
        self.expires_at = sent_at + ttl - margin_for(ttl)
        return self.expires_at

    def valid(self) -> bool:
        """True while a primary may write: one clock call, no allocation."""
        if self.ttl <= 0:
            return True
        expires = self.expires_at
        return expires is not None and self.clock() < expires

    def token(self) -> list:
        """For a stream answer: a pull that echoes it vouches for us as of now or later."""
        return [self.incarnation, self.clock()]

    def vouched_until(self, token: object) -> float | None:
        """The failsafe expiry a pull echoing `token` grants; None if it is not ours."""
        if not self.required or not isinstance(token, list) or len(token) != 2:
            return None
        incarnation, issued = token
        if incarnation != self.incarnation or type(issued) is not float \
                or not issued <= self.clock():
            return None
        return issued + self.ttl - self.margin

    def describe_failsafe(self, until: float) -> str:
        """An environment's failsafe lease, for the refusal (`until` 0: never vouched)."""
        if not until:
            return "no geo-secondary has vouched for it since the node started (failsafe)"
        now = self.clock()
        if now < until:
            return f"its geo-secondary vouches for it for {until - now:.1f} s more (failsafe)"
        return (f"its geo-secondary last vouched for it by pulling, and that failsafe lease "
                f"ended {now - until:.1f} s ago")

    def remaining(self) -> float | None:
        """Seconds left (0 once expired); None when leases are off or none was granted."""
        expires = self.expires_at
        if not self.required or expires is None:
            return None
        return max(0.0, expires - self.clock())

    def describe(self) -> str:
        """Why a write is refused now, for the 503 `no_lease` message and the logs."""
        now = self.clock()
        expires = self.expires_at
        if expires is None:
            return (f"this node's lease was never granted: the controller has not answered "
                    f"a heartbeat since the node started {now - self.started_at:.1f} s ago")
        if now < expires:
            return f"this node's lease is valid for {expires - now:.1f} s more"
        ttl = self.granted_ttl or self.ttl
        sent = now - (self.granted_at if self.granted_at is not None else expires)
        return (f"this node's lease from the controller expired {now - expires:.1f} s ago "
                f"(the controller last answered a heartbeat sent {sent:.1f} s ago; ttl "
                f"{ttl:g} s, safety margin {margin_for(ttl):g} s)")
