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
from flux_server.queue import codec, names, uploads
from flux_server.queue.broker import Broker
from flux_server.queue.decisions import Candidate, take_compatible, updated_rate
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

    async def run(self, stop: asyncio.Event) -> None:
        pubsub = self.broker.redis.pubsub()
        await pubsub.subscribe(names.wake(self.track))
        beat = asyncio.create_task(self._beat(stop), name="queue-heartbeat")
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
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError, RedisError):
                await beat
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

    async def _read(self) -> list[Candidate]:
        """Fair reads until the batch is full or an entry does not fit with the first."""
        found = list(self._carry)
        self._carry = []
        now = time.monotonic()
        if now - self._last_reclaim > self.visibility / 2:
            self._last_reclaim = now
            found += await self.broker.autoclaim(
                self.track, self.name, self.visibility, self.max_units
            )
        for priority in names.PRIORITIES:
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
        return found

    async def _next_batch(self) -> list[Candidate]:
        taken, self._carry = take_compatible(await self._read(), self.max_units)
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
        for c in batch:
            await self.broker.publish(str(c.payload["request_id"]), {"type": "started"})
        start = time.monotonic()
        try:
            results: list[Served] = await self.runner.run_batch(works)
            run_s = time.monotonic() - start
            info_units = sum(c.units for c in batch)
            outcomes = []
            for c, made in zip(batch, results, strict=True):
                if isinstance(made, ContentRejected):  # flagged by the image safety model
                    outcomes.append(codec.failed(made, self.name))
                    continue
                info = BatchInfo(len(batch), info_units, start - _enqueued(c), run_s)
                outcomes.append(codec.outcome_of(made, info, self.name, str(c.payload.get("kind"))))
            self.rate = updated_rate(self.rate, len(batch), run_s)
            if self.on_batch is not None:
                self.on_batch(BatchInfo(len(batch), info_units, 0.0, run_s))
        except ServeError as error:  # the request's own error (an input a model refused)
            outcomes = [codec.failed(error, self.name) for _ in works]
        except Exception as exc:
            log.exception("queued batch failed", extra={"error": repr(exc)})
            outcomes = [
                codec.error_outcome("internal", describe_failure(exc, w), self.name) for w in works
            ]
        for c, outcome in zip(batch, outcomes, strict=True):
            await self._sent(str(c.payload["request_id"]))
            await self.broker.finish(c, outcome, float(c.payload["result_ttl"]))
        self.running = []
        log.info(
            "queued batch done",
            extra={"request_ids": [str(c.payload["request_id"]) for c in batch],
                   "worker": self.name, "run_s": round(time.monotonic() - start, 3)},
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
                    works.append(self._work(c, loop))
                else:
                    works.append(await uploads.work_of(c.payload, self.runner, self.max_pixels))
                ready.append(c)
            except ServeError as error:
                await self.broker.finish(
                    c, codec.failed(error, self.name), float(c.payload["result_ttl"])
                )
        return ready, works

    def _work(self, c: Candidate, loop: asyncio.AbstractEventLoop) -> Generation:
        request_id = str(c.payload["request_id"])
        job = codec.job_of(c.payload)

        def publish(event: dict[str, Any]) -> None:
            # Each event waits for the one before: the front hears them in order.
            before = self._sending.get(request_id)
            task = loop.create_task(self._publish_after(before, request_id, event))
            self._sending[request_id] = task

        def progress(step: int, total: int) -> None:
            publish({"type": "progress", "step": step, "total": total})

        work = Generation(
            request=job,
            request_id=request_id,
            output_format=job.output_format,
            progress=progress,
            loop=loop,
        )
        if c.payload.get("previews"):
            work.previews = True
            work.preview = lambda image: publish({"type": "preview", **image.to_json()})
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
