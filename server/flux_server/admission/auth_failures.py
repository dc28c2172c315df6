"""Failed authentication: throttled per client address, and audited in aggregate.

Without these, a wrong key costs its sender nothing and the server an audit line
(~270 bytes): 1,000 wrong keys in 3 s from one client were 1,000 401s and 1,000 lines,
and since the audit is fail-closed, a disk filled that way stops all serving.

* :class:`FailureThrottle`: a token bucket per address. Each failed authentication takes
  a token; an address with none left is answered 429 with ``Retry-After`` (gRPC:
  RESOURCE_EXHAUSTED with RetryInfo) before its key is looked at, until the bucket
  refills (``--failed-auth-burst`` tokens, ``--failed-auth-rate`` a second). IPv6
  addresses count by their /64 (one host holds a whole /64). Addresses are kept in a
  bounded LRU table, so a spread of source addresses costs bounded memory.
* :class:`FailedAuthAudit`: instead of one line per failure, an address's first failure
  of an ``--audit-failed-auth-interval`` is written at once (one mistyped key is one
  line, as before), and the rest of that interval's in one line at its end with the
  exact count (``"count"``), the first and last request ids, and how many were
  throttled: at most two lines per address per interval, and the counts add up. The
  summaries are written at each interval's end and at shutdown; a process killed
  outright loses at most one interval's summaries.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from flux_server.admission.audit import AuditRecord
from flux_server.errors import QueueFull
from flux_server.requests.context import CallContext

MAX_ADDRESSES = 65_536
"""Addresses the throttle remembers; the least recently failing one is forgotten first."""


class AuthThrottled(QueueFull):
    """Too many failed authentications from the caller's address: 429 / RESOURCE_EXHAUSTED
    with Retry-After (the ``resource_exhausted`` reason, as a full queue)."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(
            "too many failed authentications from this address; retry after "
            f"{max(1, math.ceil(retry_after))} s",
            retry_after,
        )
        self.field = "authorization"


def address_key(address: str | None) -> str:
    """What an address counts as: IPv4 as is, IPv6 by its /64, anything else as given."""
    if not address:
        return "unknown"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6 and ip.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip.ipv4_mapped or ip) if ip.version == 6 else str(ip)


@dataclass
class _Bucket:
    tokens: float
    updated: float


class FailureThrottle:
    """A token bucket of failed authentications per address."""

    def __init__(
        self,
        burst: int,
        per_second: float,
        clock: Callable[[], float] = time.monotonic,
        max_addresses: int = MAX_ADDRESSES,
    ) -> None:
        self.burst = burst
        self.per_second = per_second
        self._clock = clock
        self._max = max_addresses
        self._buckets: collections.OrderedDict[str, _Bucket] = collections.OrderedDict()

    def _bucket(self, key: str) -> _Bucket | None:
        bucket = self._buckets.get(key)
        if bucket is not None:
            now = self._clock()
            bucket.tokens = min(
                self.burst, bucket.tokens + (now - bucket.updated) * self.per_second
            )
            bucket.updated = now
        return bucket

    def retry_after(self, address: str | None) -> float | None:
        """Seconds until ``address`` may try a key again; None when it may now."""
        bucket = self._bucket(address_key(address))
        if bucket is None or bucket.tokens >= 1:
            return None
        return (1 - bucket.tokens) / self.per_second

    def failed(self, address: str | None) -> None:
        """``address`` sent a missing or wrong key."""
        key = address_key(address)
        bucket = self._bucket(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(self.burst), self._clock())
            while len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
        self._buckets.move_to_end(key)
        bucket.tokens = max(0.0, bucket.tokens - 1)


@dataclass
class _Tally:
    since: datetime
    first_request_id: str
    endpoint: str
    count: int = 0  # after the first, which was written at once
    throttled: int = 0
    last_request_id: str = ""
    endpoints: set[str] = field(default_factory=set)


class FailedAuthAudit:
    """Failed authentications summed up: one audit line per address per interval."""

    def __init__(self, write: Callable[[AuditRecord], None], interval: float) -> None:
        self.write = write
        self.interval = interval
        self._tallies: dict[str, _Tally] = {}
        self._timer: asyncio.TimerHandle | None = None

    def note(self, ctx: CallContext, *, throttled: bool) -> None:
        """One failed (or throttled) authentication of ``ctx``. The first of an address
        in an interval is written at once (a mistyped key is one line, as before); the
        rest of the interval's are summed up in one line at its end."""
        key = address_key(ctx.client)
        tally = self._tallies.get(key)
        if tally is None:
            self._tallies[key] = _Tally(datetime.now(timezone.utc), "", ctx.endpoint)
            self._write(key, 1, int(throttled), ctx.request_id, ctx.request_id, ctx.endpoint)
        else:
            if tally.count == 0:
                tally.first_request_id = ctx.request_id
                tally.since = datetime.now(timezone.utc)
            tally.count += 1
            tally.throttled += throttled
            tally.last_request_id = ctx.request_id
            tally.endpoints.add(ctx.endpoint)
        loop = _running_loop()
        if self._timer is None and loop is not None:  # without a loop: at flush() only
            self._timer = loop.call_later(self.interval, self.flush)

    def flush(self) -> None:
        """Write the summary of every address with further failures since the last
        flush, and start a new interval."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        tallies, self._tallies = self._tallies, {}
        for address, tally in tallies.items():
            if tally.count:
                endpoint = tally.endpoint if len(tally.endpoints) == 1 else "*"
                self._write(
                    address,
                    tally.count,
                    tally.throttled,
                    tally.first_request_id,
                    tally.last_request_id,
                    endpoint,
                    tally.since,
                )

    def _write(
        self,
        address: str,
        count: int,
        throttled: int,
        first: str,
        last: str,
        endpoint: str,
        since: datetime | None = None,
    ) -> None:
        detail = (
            f"{count} failed authentications ({throttled} throttled, 429) from {address} "
            f"since {since.isoformat()}; last request {last}"
            if since is not None
            else ("throttled (429)" if throttled else "a missing or wrong key")
        )
        self.write(
            AuditRecord(
                request_id=first,
                endpoint=endpoint,
                decision="rejected",
                reason="unauthenticated",
                status=429 if throttled and count == 1 else 401,
                detail=detail,
                client=address,
                count=count,
            )
        )


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
