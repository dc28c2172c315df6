"""A front's side of the queue (``--queue``): put admitted work on its release track's
stream and wait for the result a worker stores, within the request's deadline.

The front subscribes to the request's event channel before it looks for a stored
result, so a result stored between the two is never missed. Redis unreachable: new work
is refused with 503 and ``Retry-After`` (nothing was accepted, so nothing is lost).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from flux_server.errors import DeadlineExceeded, InternalError, Unavailable
from flux_server.queue import codec, names
from flux_server.queue.broker import Broker
from flux_server.queue.decisions import eta_seconds, fair_position, release_track
from flux_server.requests.context import ProgressFn
from flux_server.requests.params import ResolvedRequest
from flux_server.requests.results import GeneratedImage
from flux_server.scheduling.batch_items import BatchInfo

RETRY_AFTER_S = 2
# A result outlives its sync request by this much: a front that asks again finds it.
_RESULT_MARGIN_S = 60.0


def unavailable(exc: BaseException) -> Unavailable:
    error = Unavailable(f"the queue is unreachable ({type(exc).__name__}); retry shortly")
    error.retry_after = RETRY_AFTER_S  # type: ignore[attr-defined]
    return error


@dataclass(frozen=True)
class Placed:
    track: str
    priority: str
    key_id: str
    entry_id: str


class FleetQueue:
    """The front's queue client."""

    def __init__(self, broker: Broker, track: str, canary_weight: int | None = None) -> None:
        self.broker = broker
        self.track = track
        # With a canary: its share of the callers, whose work goes on the canary track.
        self.canary_weight = canary_weight

    async def generate(
        self,
        job: ResolvedRequest,
        *,
        request_id: str,
        key_id: str,
        priority: bool,
        timeout: float,
        progress: ProgressFn | None = None,
    ) -> tuple[list[GeneratedImage], BatchInfo]:
        """Queue one generation and wait for its images."""
        deadline = time.monotonic() + timeout
        _, pubsub = await self.place(
            job, request_id=request_id, key_id=key_id, priority=priority, timeout=timeout
        )
        try:
            outcome = await self.wait(pubsub, request_id, deadline, progress)
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()
        return unpack(outcome)

    async def place(
        self, job: ResolvedRequest, *, request_id: str, key_id: str, priority: bool,
        timeout: float,
    ) -> tuple[Placed, Any]:  # fmt: skip
        """Put one generation on the queue, subscribed to its events first (so none is
        missed); ``Unavailable`` (503, Retry-After) when Redis cannot take it."""
        payload = codec.entry(
            job, request_id, key_id, priority=priority, timeout=timeout,
            result_ttl=timeout + _RESULT_MARGIN_S,
        )  # fmt: skip
        subject = request_id if key_id == "anonymous" else key_id
        track = release_track(self.track, self.canary_weight, subject)
        pubsub = self.broker.redis.pubsub()
        try:
            await pubsub.subscribe(names.events(request_id))
            lane = names.priority_name(priority)
            entry_id = await self.broker.enqueue(track, lane, key_id, payload)
        except (RedisError, OSError) as exc:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()
            raise unavailable(exc) from None
        return Placed(track, lane, key_id, entry_id), pubsub

    async def wait(
        self,
        pubsub: Any,
        request_id: str,
        deadline: float,
        progress: ProgressFn | None,
        on_event: Callable[[str], Awaitable[None]] | None = None,
    ) -> dict[str, Any]:
        """The stored outcome. ``on_event`` hears ``tick`` about once a second while no
        event arrives, and ``started`` when a worker starts the request."""
        while True:
            outcome = await self.broker.result(request_id)
            if outcome is not None:
                return outcome
            left = deadline - time.monotonic()
            if left <= 0:
                await self.broker.cancel(request_id, _RESULT_MARGIN_S)
                raise DeadlineExceeded("the request's deadline passed while it was queued")
            # A bounded wait: a lost message (a reconnect) costs one second, not the request.
            message = await pubsub.get_message(
                ignore_subscribe_messages=True, timeout=min(left, 1.0)
            )
            kind = "tick" if message is None else codec.json_loads(message["data"]).get("type")
            if kind == "progress" and progress is not None and message is not None:
                event = codec.json_loads(message["data"])
                progress(int(event["step"]), int(event["total"]))
            elif on_event is not None and kind in ("tick", "started"):
                await on_event(str(kind))

    async def position(self, placed: Placed) -> tuple[int | None, float | None]:
        """(position, eta_seconds) of a waiting entry, position 0 next; (None, None) once
        a worker has taken it."""
        state = await self.broker.class_state(placed.track, placed.priority)
        own = state.get(placed.key_id)
        if own is None:
            return None, None
        stream = names.stream(placed.track, placed.priority, placed.key_id)
        ahead = await self.broker.ahead_of(stream, own[1], placed.entry_id)
        if ahead is None:
            return None, None
        others = [waiting for key, (waiting, _) in state.items() if key != placed.key_id]
        first = 0
        if placed.priority != names.PRIORITIES[0]:
            high = await self.broker.class_state(placed.track, names.PRIORITIES[0])
            first = sum(waiting for waiting, _ in high.values())
        position = fair_position(ahead, others, first)
        rate = sum(float(w.get("rate", 0)) for w in await self.workers(placed.track))
        return position, eta_seconds(position, rate)

    async def workers(self, track: str | None = None) -> list[dict[str, Any]]:
        """The live workers of a track, this front's by default (their heartbeats)."""
        track = track or self.track
        return [w for w in await self.broker.workers() if w.get("track") == track]


def unpack(outcome: dict[str, Any]) -> tuple[list[GeneratedImage], BatchInfo]:
    error = outcome.get("error")
    if error is not None:
        if error.get("code") == "deadline_exceeded":
            raise DeadlineExceeded(str(error.get("message")))
        raise InternalError(str(error.get("message")))
    return codec.images_of(outcome)
