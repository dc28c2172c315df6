"""A front's side of the queue (``--queue``): put admitted work on its release track's
stream and wait for the result a worker stores, within the request's deadline.

The front subscribes to the request's event channel before it looks for a stored
result, so a result stored between the two is never missed. Redis unreachable: new work
is refused with 503 and ``Retry-After`` (nothing was accepted, so nothing is lost).

Scaled to zero: while no worker of the track runs, a synchronous request waits on the
queue (a worker starting meanwhile serves it); just before its deadline, if still no
worker is alive, it is withdrawn and answered 503 with ``Retry-After``: the seconds the
track's last worker took to start, as it recorded them (30 before any has). Answering a
little before the deadline lets a gRPC caller read the answer before its own deadline
ends the call. Async jobs wait the same way, to their own deadline.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from flux_server.errors import DeadlineExceeded, Unavailable
from flux_server.execution.previews import PreviewFn, PreviewImage
from flux_server.queue import codec, names
from flux_server.queue.broker import Broker
from flux_server.queue.decisions import eta_seconds, fair_position, release_track
from flux_server.requests.context import ProgressFn
from flux_server.requests.params import ResolvedRequest
from flux_server.scheduling.batch_items import BatchInfo
from flux_server.scheduling.work import Made

RETRY_AFTER_S = 2
WARMING_RETRY_AFTER_S = 30
"""Advised while no worker runs and none of the track has recorded its start time."""
MAX_RETRY_AFTER_S = 900
# A request with no worker alive is answered this long before its deadline (at most a
# tenth of its timeout).
_ANSWER_MARGIN_S = 1.0
# A result outlives its sync request by this much: a front that asks again finds it.
_RESULT_MARGIN_S = 60.0
# Longest a front reads on for previews published just before the result it found.
_DRAIN_S = 1.0


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
        job: ResolvedRequest | None,
        *,
        request_id: str,
        key_id: str,
        priority: bool,
        timeout: float,
        progress: ProgressFn | None = None,
        preview: PreviewFn | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> tuple[Made, BatchInfo]:
        """Queue one generation, edit or question (``extra``: its kind and upload) and
        wait for its images or answer (``preview``: its worker publishes live previews,
        heard here)."""
        deadline = time.monotonic() + timeout
        placed, pubsub = await self.place(
            job, request_id=request_id, key_id=key_id, priority=priority, timeout=timeout,
            previews=preview is not None, progress=progress is not None, extra=extra,
        )  # fmt: skip
        answer_by = deadline - min(_ANSWER_MARGIN_S, timeout / 10)
        try:
            outcome = await self.wait(
                pubsub, request_id, deadline, progress, answer_by=answer_by, preview=preview
            )
        except Unavailable:
            # No worker took it: gone from the stream, so no autoscaler counts it and no
            # worker starting later reads it.
            with contextlib.suppress(RedisError, OSError):
                await self.broker.withdraw(
                    names.stream(placed.track, placed.priority, placed.key_id), placed.entry_id
                )
            raise
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()
        return unpack(outcome)

    async def place(
        self, job: ResolvedRequest | None, *, request_id: str, key_id: str, priority: bool,
        timeout: float, previews: bool = False, progress: bool = True,
        extra: Mapping[str, Any] | None = None,
    ) -> tuple[Placed, Any]:  # fmt: skip
        """Put one generation on the queue, subscribed to its events first (so none is
        missed); ``Unavailable`` (503, Retry-After) when Redis cannot take it."""
        payload = codec.entry(
            job, request_id, key_id, priority=priority, timeout=timeout,
            result_ttl=timeout + _RESULT_MARGIN_S, previews=previews, progress=progress,
            extra=extra,
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
        answer_by: float | None = None,
        *,
        preview: PreviewFn | None = None,
    ) -> dict[str, Any]:
        """The stored outcome. ``on_event`` hears ``tick`` about once a second while no
        event arrives, and ``started`` when a worker starts the request. ``answer_by``:
        from then, with no worker alive, :meth:`no_worker` ends the wait. ``preview``
        hears each live preview, in the order the worker published them."""
        done = False
        kind = "tick"
        while True:
            # Read when it may be there: at first, on ``done``, and after a silence (a
            # message lost to a reconnect); not at every progress event.
            outcome = await self.broker.result(request_id) if kind in ("tick", "done") else None
            if outcome is not None:
                if preview is not None and not done:
                    await _previews_left(pubsub, preview)
                return outcome
            now = time.monotonic()
            if answer_by is not None and now >= answer_by:
                answer_by = None  # asked once: a worker alive now will take it in time
                if not await self.workers():
                    await self.broker.cancel(request_id, _RESULT_MARGIN_S)
                    raise await self.no_worker()
            left = deadline - now
            if left <= 0:
                await self.broker.cancel(request_id, _RESULT_MARGIN_S)
                raise DeadlineExceeded("the request's deadline passed while it was queued")
            # A bounded wait: a lost message (a reconnect) costs one second, not the request.
            bound = min(left, 1.0) if answer_by is None else min(left, 1.0, answer_by - now)
            message = await pubsub.get_message(
                ignore_subscribe_messages=True, timeout=max(bound, 0.01)
            )
            event = {} if message is None else codec.json_loads(message["data"])
            kind = str(event.get("type", "tick"))
            done = done or kind == "done"
            if kind == "progress" and progress is not None:
                progress(int(event["step"]), int(event["total"]))
            elif kind == "preview" and preview is not None:
                preview(PreviewImage.from_json(event))
            elif on_event is not None and kind in ("tick", "started"):
                await on_event(kind)

    async def no_worker(self) -> Unavailable:
        """503 for a request that waited while no worker of the track ran, with the
        track's last measured start as ``Retry-After``."""
        measured = None
        with contextlib.suppress(RedisError, OSError, ValueError):
            measured = await self.broker.startup_seconds(self.track)
        wait = WARMING_RETRY_AFTER_S if measured is None else measured
        seconds = min(max(math.ceil(wait), 1), MAX_RETRY_AFTER_S)
        error = Unavailable(
            f"no worker of release track {self.track!r} is running yet (scaled to zero; one "
            f"is starting when the autoscaler sees the queue); retry in {seconds} s"
        )
        error.retry_after = seconds  # type: ignore[attr-defined]
        return error

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


async def _previews_left(pubsub: Any, preview: PreviewFn) -> None:
    """The previews still unread when the result is found: a worker publishes them
    before it stores the result, and ``done`` after, on the same channel."""
    until = time.monotonic() + _DRAIN_S
    while (left := until - time.monotonic()) > 0:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
        event = {} if message is None else codec.json_loads(message["data"])
        if event.get("type") in (None, "done"):
            return
        if event["type"] == "preview":
            preview(PreviewImage.from_json(event))


def unpack(outcome: dict[str, Any]) -> tuple[Made, BatchInfo]:
    """A stored outcome as the batcher answers: images (a generation, an edit) or an
    answer (a question) with the batch's timings; the stored error raised as is."""
    error = outcome.get("error")
    if error is not None:
        raise codec.error_of(error)
    if "answer" in outcome:
        return Made(answer=str(outcome["answer"])), codec.info_of(outcome)
    images, info = codec.images_of(outcome)
    return Made(images), info
