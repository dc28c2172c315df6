"""A worker's pull loop (``--role worker|all``): take a fair, compatible batch when the
engine is free, run it, store each result, then acknowledge.

Entries come priority class first, then the normal class; within a class the API keys
take turns (see :mod:`flux_server.queue.decisions`). A worker that stops beating loses
its entries to ``XAUTOCLAIM`` after ``visibility`` seconds; one that beats renews them
while its batch runs, however long the batch takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from redis.exceptions import RedisError

from flux_server.errors import ContentRejected, ServeError
from flux_server.execution.cancellation import CancelToken
from flux_server.execution.step_priority import NotTaken
from flux_server.queue import codec, names, uploads
from flux_server.queue.broker import Broker
from flux_server.queue.decisions import Candidate, is_priority, take_compatible, updated_rate
from flux_server.queue.step_watch import StepWatch
from flux_server.scheduling.batch_items import BatchInfo
from flux_server.scheduling.runner import Runner, Served, describe_failure
from flux_server.scheduling.work import Generation, Work

log = logging.getLogger(__name__)

_IDLE_WAIT_S = 0.5


class QueueWorker:
    """Pulls from one release track's streams into one runner."""

    def __init__(
        self,
        broker: Broker,
        runner: Runner,
        *,
        track: str,
        name: str,
        max_units: int,
        visibility: float,
        on_batch: Callable[[BatchInfo], None] | None = None,
        max_pixels: int = 4096 * 4096,
    ) -> None:
        self.broker, self.runner = broker, runner
        self.track, self.name, self.max_units = track, name, max_units
        self.visibility = visibility
        self.on_batch = on_batch
        self.max_pixels = max_pixels  # an uploaded image's cap (--max-image-pixels)
        self.rate = 0.0  # requests per second, smoothed
        self.running: list[Candidate] = []
        self._carry: list[Candidate] = []
        self._last_reclaim = 0.0
        self._sending: dict[str, asyncio.Task[None]] = {}  # each request's last event
        self.watch = StepWatch(broker, track, self._serve_priority)

    async def run(self, stop: asyncio.Event) -> None:
        pubsub = self.broker.redis.pubsub()
        await pubsub.subscribe(names.wake(self.track))
        beat = asyncio.create_task(self._beat(stop), name="queue-heartbeat")
        watch = asyncio.create_task(self.watch.run(stop), name="queue-step-watch")
        try:
            while not stop.is_set():
                try:
                    batch = await self._next_batch()
                    if batch:
                        await self._run(batch)
                        continue
                    await pubsub.get_message(ignore_subscribe_messages=True, timeout=_IDLE_WAIT_S)
                except RedisError as exc:
                    log.warning("queue unreachable; retrying", extra={"error": repr(exc)})
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(stop.wait(), 1.0)
        finally:
            for task in (beat, watch):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, RedisError):
                    await task
            with contextlib.suppress(RedisError):
                await pubsub.aclose()

    async def _beat(self, stop: asyncio.Event) -> None:
        period = max(self.visibility / 3, 0.2)
        while not stop.is_set():
            with contextlib.suppress(RedisError):
                info = {"name": self.name, "track": self.track, "rate": self.rate,
                        "busy": bool(self.running)}  # fmt: skip
                await self.broker.heartbeat(self.track, self.name, info, self.visibility)
                if self.running:
                    await self.broker.renew(self.name, self.running, self.visibility)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), period)

    async def _read(
        self, priorities: Sequence[str] = names.PRIORITIES, main: bool = True
    ) -> list[Candidate]:
        """Fair reads until the batch is full or an entry does not fit with the first;
        ``main``: the pull loop's read (entries held over, then reclaimed ones, first)."""
        found: list[Candidate] = []
        if main:
            found, self._carry = list(self._carry), []
        now = time.monotonic()
        if main and now - self._last_reclaim > self.visibility / 2:
            self._last_reclaim = now
            found += await self.broker.autoclaim(
                self.track, self.name, self.visibility, self.max_units
            )
        for priority in priorities:
            order = await self.broker.turn_order(self.track, priority)
            while order and not _full(found, self.max_units):
                for key_id in list(order):
                    got = await self.broker.read_one(self.track, priority, key_id, self.name)
                    if got is None:
                        order.remove(key_id)
                        continue
                    found.append(got)
                    if _full(found, self.max_units) or got.batch_key != found[0].batch_key:
                        return found
            if any(is_priority(c.payload) for c in found):
                # A priority batch takes no normal company (its call would be slower),
                # and normal entries not read now stay free for another worker.
                return found
        return found

    async def _next_batch(
        self, priorities: Sequence[str] = names.PRIORITIES, main: bool = True
    ) -> list[Candidate]:
        taken, rest = take_compatible(await self._read(priorities, main), self.max_units)
        self._carry = rest + self._carry
        batch = []
        for c in taken:
            request_id = str(c.payload["request_id"])
            if time.time() > float(c.payload["deadline"]):
                outcome = codec.error_outcome(
                    "deadline_exceeded", "the request's deadline passed while it waited", self.name
                )
                await self.broker.finish(c, outcome, float(c.payload["result_ttl"]))
            elif await self.broker.claim(request_id, self.name, self.visibility):
                batch.append(c)
            elif await self.broker.result(request_id) is not None or await self._cancelled(c):
                await self.broker.finish(c, None, 0)  # answered already: acknowledge only
            # else: another live worker runs it; it acknowledges when done.
        return batch

    async def _cancelled(self, c: Candidate) -> bool:
        return bool(await self.broker.redis.exists(names.cancelled(str(c.payload["request_id"]))))

    async def _run(self, batch: Sequence[Candidate]) -> None:
        self.running = list(batch)
        batch, works = await self._prepare(batch)
        if not batch:
            self.running = []
            return
        self._announce(batch)
        self.watch.running({str(w.request_id): w.token for w in works if w.token is not None})
        start = time.monotonic()
        try:
            outcomes = self._outcomes(batch, await self.runner.run_batch(works), start)
        except ServeError as error:  # the request's own error (an input a model refused)
            outcomes = [codec.failed(error, self.name) for _ in works]
        except Exception as exc:
            log.exception("queued batch failed", extra={"error": repr(exc)})
            outcomes = [
                codec.error_outcome("internal", describe_failure(exc, w), self.name) for w in works
            ]
        finally:
            self.watch.running({})
        await self._finish(batch, works, outcomes, start, at_step=False)
        await self.watch.settled()  # priority work offered meanwhile: served or held over
        self.running = [c for c in self.running if c not in batch]

    async def _serve_priority(self) -> bool:
        """Priority entries, served at the running call's next step boundary (the call
        paused); held over as the next batch when the call ended before taking them.
        True when there were some to serve (there may be more)."""
        batch = await self._next_batch((names.PRIORITIES[0],), main=False)
        if not batch:
            return False
        self.running += batch
        ready, works = await self._prepare(batch)
        self.running = [c for c in self.running if c in ready or c not in batch]
        batch = ready
        if not batch:
            return True
        self._announce(batch)
        start = time.monotonic()
        try:
            outcomes = self._outcomes(batch, await self.runner.run_at_step(works), start)
        except NotTaken:
            self._carry = list(batch) + self._carry  # claimed: the next batch is theirs
            self.running = [c for c in self.running if c not in batch]
            return False
        except Exception as exc:
            log.exception("priority work failed", extra={"error": repr(exc)})
            outcomes = [
                codec.error_outcome("internal", describe_failure(exc, w), self.name) for w in works
            ]
        await self._finish(batch, works, outcomes, start, at_step=True)
        self.running = [c for c in self.running if c not in batch]
        return True

    def _announce(self, batch: Sequence[Candidate]) -> None:
        """Each request's ``started``, sent beside its call, not before it: the call
        need not wait a round trip for it (its events still go out in order)."""
        for c in batch:
            self._publish(str(c.payload["request_id"]), {"type": "started"})

    def _publish(self, request_id: str, event: dict[str, Any]) -> None:
        # Each event waits for the one before: the front hears them in order.
        before = self._sending.get(request_id)
        task = asyncio.get_running_loop().create_task(
            self._publish_after(before, request_id, event)
        )
        self._sending[request_id] = task

    def _outcomes(
        self, batch: Sequence[Candidate], results: Sequence[Served], start: float
    ) -> list[dict[str, Any]]:
        run_s = time.monotonic() - start
        units = sum(c.units for c in batch)
        outcomes = []
        for c, made in zip(batch, results, strict=True):
            if isinstance(made, ContentRejected):  # flagged by the image safety model
                outcomes.append(codec.failed(made, self.name))
                continue
            info = BatchInfo(len(batch), units, start - _enqueued(c), run_s)
            outcomes.append(codec.outcome_of(made, info, self.name, str(c.payload.get("kind"))))
        self.rate = updated_rate(self.rate, len(batch), run_s)
        if self.on_batch is not None:
            self.on_batch(BatchInfo(len(batch), units, 0.0, run_s))
        return outcomes

    async def _finish(
        self,
        batch: Sequence[Candidate],
        works: Sequence[Work],
        outcomes: Sequence[dict[str, Any] | None],
        start: float,
        *,
        at_step: bool,
    ) -> None:
        """Store each outcome and acknowledge; a cancelled entry is acknowledged only
        (its front recorded the cancel; whatever the call made for it is dropped)."""
        cancelled = []
        for c, work, outcome in zip(batch, works, outcomes, strict=True):
            withdrawn = work.token is not None and work.token.cancelled
            if withdrawn:
                cancelled.append(work.request_id)
            stored = None if withdrawn else outcome
            await self._sent(str(c.payload["request_id"]))  # its events precede its result
            await self.broker.finish(c, stored, float(c.payload["result_ttl"]))
        if cancelled:
            log.info(
                "queued work cancelled",
                extra={"request_ids": cancelled, "worker": self.name, "step": self.runner.step},
            )
        log.info(
            "queued batch done",
            extra={"request_ids": [str(c.payload["request_id"]) for c in batch],
                   "worker": self.name, "at_step": at_step,
                   "run_s": round(time.monotonic() - start, 3)},
        )  # fmt: skip

    async def _prepare(self, batch: Sequence[Candidate]) -> tuple[list[Candidate], list[Work]]:
        """The batch's work; an edit or a question this worker cannot take is answered
        at once with its error (no model call)."""
        loop = asyncio.get_running_loop()
        ready: list[Candidate] = []
        works: list[Work] = []
        for c in batch:
            try:
                if c.payload.get("kind", "generate") == "generate":
                    job = codec.job_of(c.payload)
                    request_id = str(c.payload["request_id"])
                    work: Work = Generation(
                        request=job, request_id=request_id, output_format=job.output_format
                    )
                else:
                    work = await uploads.work_of(c.payload, self.runner, self.max_pixels)
                works.append(self._heard(work, c, loop))
                ready.append(c)
            except ServeError as error:
                await self.broker.finish(
                    c, codec.failed(error, self.name), float(c.payload["result_ttl"])
                )
        return ready, works

    def _heard(self, work: Work, c: Candidate, loop: asyncio.AbstractEventLoop) -> Work:
        """The work with its progress and live previews, where its front relays them,
        published on the request's events channel. (An entry without the ``progress``
        field, from an older front, gets progress.)"""
        request_id = work.request_id

        def progress(step: int, total: int) -> None:
            self._publish(request_id, {"type": "progress", "step": step, "total": total})

        work.loop = loop
        if c.payload.get("progress", True):
            work.progress = progress
        work.token = work.token or CancelToken()
        if c.payload.get("previews"):
            work.previews = True
            work.preview = lambda image: self._publish(
                request_id, {"type": "preview", **image.to_json()}
            )
        return work

    async def _publish_after(
        self, before: asyncio.Task[None] | None, request_id: str, event: dict[str, Any]
    ) -> None:
        if before is not None:
            with contextlib.suppress(Exception):
                await before
        with contextlib.suppress(RedisError):  # progress is advice; the result is not
            await self.broker.publish(request_id, event)

    async def _sent(self, request_id: str) -> None:
        """Every event of the request published: they precede its result and ``done``."""
        last = self._sending.pop(request_id, None)
        if last is not None:
            with contextlib.suppress(Exception):
                await last


def _full(found: Sequence[Candidate], max_units: int) -> bool:
    return sum(c.units for c in found) >= max_units


def _enqueued(c: Candidate) -> float:
    # The entry's wait in monotonic terms, from its wall-clock enqueue time.
    return time.monotonic() - (time.time() - float(c.payload["enqueued"]))
