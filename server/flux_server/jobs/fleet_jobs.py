"""Async jobs on the fleet's queue (``--queue``): the job is an entry like a synchronous
request's, with the job's deadline; the front that accepted it follows it to its outcome.

While it waits, the job's ``queued`` events carry its place (``position``, 1 next), the
fleet's estimate (``eta_seconds``, from the live workers' measured rates) and
``warming_up`` while no worker of its release track is alive. They are read about once
a second, and an event is sent only when one of them changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import RedisError

from flux_server.jobs.manager import JobManager
from flux_server.jobs.records import JobStateError
from flux_server.queue.front import FleetQueue, Placed, unpack
from flux_server.scheduling.batch_items import BatchInfo
from flux_server.scheduling.work import Generation, Made, Work


class FleetJobs:
    """A front's async jobs on the queue."""

    def __init__(self, front: FleetQueue, manager: JobManager) -> None:
        self.front = front
        self.manager = manager

    async def place(
        self, work: Work, *, key_id: str, priority: bool, timeout: float
    ) -> tuple[Placed, Any]:
        """Queue the job's work, a generation or an edit with its upload
        (``Unavailable`` when Redis cannot take it)."""
        request = work.request if isinstance(work, Generation) else None
        return await self.front.place(
            request, request_id=work.request_id, key_id=key_id, priority=priority,
            timeout=timeout, previews=work.preview is not None, extra=work.fleet_entry,
        )  # fmt: skip

    async def follow(
        self,
        job_id: str,
        work: Work,
        placed: tuple[Placed, Any],
        timeout: float,
        on_start: Callable[[], Awaitable[None]],
    ) -> tuple[Made, BatchInfo]:
        """The job's images once a worker stored them, its place reported meanwhile.
        A cancelled job ends with ``CancelledError`` (the cancel is recorded already)."""
        entry, pubsub = placed
        started = False

        async def on_event(kind: str) -> None:
            nonlocal started
            if work.token is not None and work.token.cancelled:
                raise asyncio.CancelledError  # withdrawn: workers skip its entry
            if kind == "started" and not started:
                started = True
                await on_start()
            elif not started:
                await self.report_place(job_id, entry)

        deadline = time.monotonic() + timeout
        try:
            await self.report_place(job_id, entry)
            outcome = await self.front.wait(
                pubsub, work.request_id, deadline, work.progress, on_event, preview=work.preview
            )
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()
        if not started:  # the started event was lost (a reconnect): the job ran
            await on_start()
        return unpack(outcome)

    async def withdraw(self, request_id: str, timeout: float) -> None:
        with contextlib.suppress(RedisError, OSError):  # then it runs; its images are dropped
            await self.front.broker.cancel(request_id, timeout)

    async def report_place(self, job_id: str, entry: Placed) -> None:
        try:
            position, eta = await self.front.position(entry)
            warming_up = not await self.front.workers(entry.track)
        except (RedisError, OSError):
            return  # the next tick tries again; the wait itself notices a lasting outage
        if position is None:
            return  # taken by a worker: its started event follows
        with contextlib.suppress(JobStateError):  # it started or ended meanwhile
            await self.manager.reposition(job_id, position, None if warming_up else eta, warming_up)
