"""The scheduler between the APIs and the engine: pure asyncio, no torch.

- A bounded queue: past ``max_queue`` waiting requests, :class:`QueueFull`.
- Dynamic batching: requests with equal keys join one call, up to ``max_batch_size``
  units (images). Policy ``when-busy`` (the default): a request that finds the engine
  idle runs at once unless other requests are on their way in (announced with
  :meth:`Batcher.arrival` while they pass admission) -- then it waits for them, at
  most ``max_delay``; requests that arrive while a call runs gather into the next one.
  So batching costs a lone request nothing, and requests being checked when an idle
  engine takes one still join it (a request not yet at the door cannot be known: the
  first of a burst that reaches an idle engine may run alone). Policy ``always``: the
  oldest request waits up to ``max_delay`` for company even when nobody is coming.
- A priority lane: a priority request goes ahead of every normal one and does not wait
  for company (it still takes along priority requests that are already waiting).
- Deadlines: a request whose deadline passes while waiting is dropped from the queue;
  one whose deadline passes while running gets DeadlineExceeded (its batch goes on).
- Cancellation: a caller that goes away before its batch starts leaves the queue.
- A failing batch is split in halves and retried, so one bad request (say, out of
  memory at a size) fails alone and the others still succeed (:mod:`.outcomes`).
- Drain: stop accepting, finish what was accepted.
- Priority at the step (with ``run_at_step``): a priority request arriving while a batch
  runs is served at that call's next denoising step boundary (:mod:`.at_step`).

One batch runs at a time: the engine owns one accelerator. The waiting requests and
what a batch takes of them: :mod:`.lanes`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Sequence
from typing import Generic, Literal, TypeVar

from flux_server.errors import DeadlineExceeded, QueueFull, Unavailable
from flux_server.scheduling.at_step import AtStepLane, RunAtStep
from flux_server.scheduling.batch_items import Arrival, Arrivals, BatchInfo, QueueItem
from flux_server.scheduling.lanes import Lanes
from flux_server.scheduling.outcomes import call_info, deliver, run_in_halves

_JOIN_TURNS = 3
P = TypeVar("P")
R = TypeVar("R")


WaitPolicy = Literal["when-busy", "always"]
"""When the oldest waiting request waits for company (see the module docstring)."""

RunBatch = Callable[[Sequence[P]], Awaitable[Sequence[R | BaseException]]]
"""Runs payloads with equal keys together; returns one result per payload, in order. A
result that is an exception fails that payload's request alone."""


class Batcher(Generic[P, R]):
    def __init__(
        self,
        run_batch: RunBatch[P, R],
        *,
        key: Callable[[P], Hashable],
        units: Callable[[P], int] = lambda _: 1,
        max_batch_size: int = 4,
        max_delay: float = 0.05,
        max_queue: int = 64,
        wait: WaitPolicy = "when-busy",
        on_batch: Callable[[BatchInfo], None] | None = None,
        on_depth: Callable[[int], None] | None = None,
        on_running: Callable[[int], None] | None = None,
        run_at_step: RunAtStep[P, R] | None = None,
    ) -> None:
        self._run_batch, self._key, self._units = run_batch, key, units
        self.max_delay, self.max_queue, self.wait_policy = max_delay, max_queue, wait
        self._on_batch, self._on_running = on_batch, on_running
        self._lanes: Lanes[P, R] = Lanes(max_batch_size, on_depth)
        self._inflight: list[QueueItem[P, R]] = []  # the batch running now
        self._seq = itertools.count()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._accepting = True
        self._worker: asyncio.Task[None] | None = None
        self._running = 0
        self._arrivals = Arrivals(self._wakeup)  # announced, not yet queued (arrival())
        self._avg_batch_s = 1.0
        # A priority request arriving mid-batch: served at the call's next step boundary.
        self._at_step = (
            None
            if run_at_step is None
            else AtStepLane(
                run_at_step, self._lanes.take_priority, self._put_back, lambda: bool(self._running)
            )
        )

    @property
    def max_batch_size(self) -> int:
        """Units (images) one call holds at most; a larger request runs alone."""
        return self._lanes.max_batch_size

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._work(), name="batcher")

    async def drain(self, timeout: float | None = None) -> bool:
        """Stop accepting; wait until every accepted request is answered. Returns False
        when ``timeout`` passed first (what is left then fails with Unavailable)."""
        self._accepting = False
        self._wakeup.set()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            drained = True
        except asyncio.TimeoutError:
            drained = False
        await self.close()
        return drained

    async def close(self) -> None:
        """Stop now; waiting and running requests fail with Unavailable."""
        self._accepting = False
        for item in self._lanes.clear():
            if not item.future.done():
                item.future.set_exception(Unavailable("the server is shutting down"))
        for item in self._inflight:
            if not item.future.done():
                item.future.set_exception(
                    Unavailable("the server shut down before this request finished")
                )
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None

    @property
    def accepting(self) -> bool:
        return self._accepting

    @property
    def depth(self) -> int:
        """Requests waiting (not running)."""
        return self._lanes.depth

    def waiting(self) -> tuple[int, int, float | None]:
        """(priority, normal) requests waiting and the oldest one's enqueue time (the
        event loop's clock; None when nothing waits): what ``GET /queue`` reports."""
        return self._lanes.waiting()

    # -- submitting ----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def arrival(self) -> AsyncIterator[Arrival]:
        """Announce a request while it passes the checks before the queue: an idle engine
        waits for announced requests (up to ``max_delay``) instead of starting a batch
        without them. Pass it to :meth:`submit`/:meth:`enqueue`, which end it; leaving
        the block ends it too (a refused request, a cache hit)."""
        announced = self._arrivals.announce()
        try:
            yield announced
        finally:
            announced.end()

    async def submit(
        self,
        payload: P,
        *,
        priority: bool = False,
        timeout: float | None = None,
        arrival: Arrival | None = None,
    ) -> tuple[R, BatchInfo]:
        """Queue ``payload`` and wait for its result.

        Raises QueueFull, Unavailable (draining), DeadlineExceeded, or the error the batch
        call raised for this payload. Cancelling the awaiting task removes the request
        from the queue when its batch has not started.
        """
        item = self.enqueue(payload, priority=priority, timeout=timeout, arrival=arrival)
        return await self.wait(item, timeout)

    def check_capacity(self) -> None:
        """Raise what :meth:`enqueue` would raise now (draining, a full queue): an async
        job is refused before it is recorded, not recorded and then failed."""
        if not self._accepting:
            raise Unavailable("the server is draining and accepts no new requests")
        if self.depth >= self.max_queue:
            batches_ahead = self.depth / self.max_batch_size + 1
            raise QueueFull(
                f"the queue is full ({self.max_queue} requests waiting); retry later",
                retry_after=batches_ahead * self._avg_batch_s,
            )

    def enqueue(
        self,
        payload: P,
        *,
        priority: bool = False,
        timeout: float | None = None,
        arrival: Arrival | None = None,
    ) -> QueueItem[P, R]:
        """Queue ``payload`` without waiting; :meth:`wait` for its result, or
        :meth:`withdraw` it. Raises QueueFull or Unavailable (draining)."""
        if arrival is not None:
            arrival.end()
        self.check_capacity()
        loop = asyncio.get_running_loop()
        now = loop.time()
        item: QueueItem[P, R] = QueueItem(
            payload=payload,
            key=self._key(payload),
            units=self._units(payload),
            priority=priority,
            deadline=now + timeout if timeout is not None else float("inf"),
            enqueued=now,
            seq=next(self._seq),
            future=loop.create_future(),
        )
        self._lanes.add(item)
        self._idle.clear()
        self._wakeup.set()
        if priority and self._at_step is not None:
            self._at_step.arrived()
        return item

    async def wait(self, item: QueueItem[P, R], timeout: float | None) -> tuple[R, BatchInfo]:
        """The result of a queued item (see :meth:`submit` for the errors)."""
        try:
            if timeout is None:
                return await asyncio.shield(item.future)
            return await asyncio.wait_for(asyncio.shield(item.future), timeout)
        except asyncio.TimeoutError:
            self._forget(item)
            raise DeadlineExceeded(
                f"the request's deadline of {timeout:.3g}s passed "
                + ("while it ran" if item.started else "while it waited in the queue")
            ) from None
        except asyncio.CancelledError:
            self._forget(item)
            raise

    def withdraw(self, item: QueueItem[P, R]) -> bool:
        """Take a waiting item out of the queue (a cancelled job); False when its batch
        has started already (then its result is dropped when it comes)."""
        started = item.started
        self._forget(item)
        return not started

    def positions(self) -> dict[int, P]:
        """The waiting payloads by 0-based place: the priority lane first, each lane in
        order of arrival (the order the worker takes them, batching aside)."""
        return self._lanes.positions()

    def _forget(self, item: QueueItem[P, R]) -> None:
        if not item.started:
            self._lanes.remove(item)
        if not item.future.done():
            item.future.cancel()
        self._check_idle()

    # -- the worker ----------------------------------------------------------------------

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        lanes = self._lanes
        while True:
            lanes.expire(loop.time())
            if not lanes.depth:
                self._check_idle()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if lanes.priority:
                batch = lanes.take(lanes.priority, lanes.priority[0])
            else:
                head = lanes.normal[0]
                await self._wait_for_company(head)
                if lanes.priority or not lanes.normal or lanes.normal[0] is not head:
                    continue  # the queue changed under us: decide again
                batch = lanes.take(lanes.normal, head)
            if batch:
                await self._run(batch)

    async def _wait_for_company(self, head: QueueItem[P, R]) -> None:
        """Wait, up to ``max_delay`` after ``head`` was queued, for requests to join it."""
        loop = asyncio.get_running_loop()
        until = head.enqueued + self.max_delay
        always = self.wait_policy == "always"
        if not always:
            # Requests sent together reach the queue a few event-loop turns apart: let
            # the ones already past admission join.
            for _ in range(_JOIN_TURNS):
                await asyncio.sleep(0)
        while self._worth_waiting(head, always) and loop.time() < until:
            self._wakeup.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), until - loop.time())

    def _worth_waiting(self, head: QueueItem[P, R], always: bool) -> bool:
        """Whether waiting for company still makes sense: the batch has room, the oldest
        request is still ``head``, no priority request turned up, and (policy
        ``when-busy``) someone is on the way in."""
        lanes = self._lanes
        return (
            self._accepting
            and not lanes.priority
            and bool(lanes.normal)
            and lanes.normal[0] is head
            and lanes.units_for(head) < lanes.max_batch_size
            and (always or self._arrivals.count > 0)
        )

    def _put_back(self, items: list[QueueItem[P, R]]) -> None:
        """Items offered at a step and not taken: the head of the lane again."""
        self._lanes.put_back(items)
        self._wakeup.set()

    async def _run(self, batch: list[QueueItem[P, R]]) -> None:
        self._running += 1
        self._inflight = batch
        for item in batch:
            item.started = True
        if self._on_running is not None:
            self._on_running(len(batch))
        try:
            await run_in_halves(self._run_batch, batch, self._call_done)
        finally:
            if self._at_step is not None:
                await self._at_step.settled()
            self._inflight = []
            self._running -= 1
            if self._on_running is not None:
                self._on_running(0)
            self._check_idle()

    def _call_done(
        self,
        batch: list[QueueItem[P, R]],
        results: Sequence[R | BaseException],
        started: float,
        run_s: float,
    ) -> None:
        self._avg_batch_s = 0.8 * self._avg_batch_s + 0.2 * run_s
        if self._on_batch is not None:
            self._on_batch(call_info(batch, run_s))
        deliver(batch, results, started, run_s)

    def _check_idle(self) -> None:
        if not self._lanes.depth and self._running == 0:
            self._idle.set()
