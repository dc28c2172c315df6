"""Async jobs on the shared queue: what happens between ``Prefer: respond-async`` and
the job's outcome, after admission has passed the request.

A job is recorded first (``Unavailable`` when the store cannot: a job nobody could
find is never accepted), then its :class:`~flux_server.scheduling.runner.Work` joins the same
batcher as synchronous requests, so batching, the priority lane and deadlines hold for
it too. A task per job waits for the result and reports it to the
:class:`~flux_server.jobs.manager.JobManager`; the batch reports the start, every step
goes to the manager, and a cancel either takes the work out of the queue or sets its
token, which stops its pipeline call at the next step once every member is cancelled.
With ``--queue`` a generation goes on the fleet's queue instead, and this front follows
it there (:mod:`flux_server.jobs.fleet_jobs`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from flux_server.admission.audit_lines import Trail, refusal_of
from flux_server.admission.gate import Admission
from flux_server.errors import InternalError, ServeError
from flux_server.jobs.fleet_jobs import FleetJobs
from flux_server.jobs.manager import JobManager
from flux_server.jobs.records import EventKind, JobEvent, JobState, JobStateError
from flux_server.jobs.webhook_url import WebhookTarget
from flux_server.requests.results import GeneratedImage
from flux_server.scheduling.batcher import Batcher, BatchInfo
from flux_server.scheduling.runner import Runner, describe_failure
from flux_server.scheduling.work import Generation, Made, Work

log = logging.getLogger(__name__)

#: Called with a succeeded job's trail, images and batch (None for a cache hit): an
#: experiment counts the job like a synchronous request served in its arm.
ServedFn = Callable[[Trail, list[GeneratedImage], BatchInfo | None], Awaitable[None]]


@dataclass(eq=False)
class AsyncJobs:
    """The jobs this replica accepted, from submission to outcome."""

    batcher: Batcher[Work, Made]
    admission: Admission
    manager: JobManager
    runner: Runner
    default_timeout: float
    on_served: ServedFn | None = None
    fleet: FleetJobs | None = None  # --queue: generations ride the fleet's queue
    _trails: dict[str, Trail] = field(default_factory=dict, init=False)  # live jobs' audit
    # A failed job's audit reason and detail, when they say more than its error does
    # (the content policy's reason, what matched).
    _refusals: dict[str, tuple[str, str]] = field(default_factory=dict, init=False)
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set, init=False)
    _repositioning: asyncio.Task[None] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.manager.add_listener(self._audit)

    async def submit(
        self,
        trail: Trail,
        work: Work,
        *,
        webhook: WebhookTarget | None,
        webhook_events_filter: frozenset[str],
        cache_key: str | None,
    ) -> JobState:
        """Record the job and queue its work; returns the job as first recorded."""
        ctx = trail.ctx
        # Generations, and edits with their upload in the entry, ride the fleet's queue.
        queued = isinstance(work, Generation) or work.fleet_entry is not None
        fleet = self.fleet if queued else None
        if fleet is None:
            self.batcher.check_capacity()  # 429/503 before anything is recorded
        cached = await self.admission.lookup(cache_key)
        state, live = await self.manager.submit(
            position=0 if fleet is not None else self.batcher.depth,
            kind=work.kind,
            request_id=ctx.request_id,
            webhook=webhook,
            webhook_events_filter=webhook_events_filter,
            experiment=trail.experiment.served() if trail.experiment else None,
            user=trail.user,
        )
        job_id = state.id
        self._trails[job_id] = trail
        try:
            self.admission.job_event(trail, job_id, "submitted")
        except ServeError as error:
            # Recorded but never to run: say so on the job, and refuse the submission.
            self._trails.pop(job_id, None)
            await self.manager.failed(job_id, error)
            raise
        steps = work.steps
        if cached is not None:
            self._spawn(self._finish_cached(job_id, steps, cached))
            return state
        work.job_id = job_id
        work.token = live.token
        work.loop = asyncio.get_running_loop()
        work.progress = self.manager.progress_callback(job_id)
        if work.previews:
            work.preview = self.manager.preview_callback(job_id)
        work.on_start = lambda: self._started(job_id, steps)
        timeout = ctx.timeout if ctx.timeout is not None else self.default_timeout
        if fleet is not None:
            await self._submit_fleet(fleet, job_id, work, trail, timeout, cache_key)
        else:
            await self._submit_local(job_id, work, ctx.priority, timeout, cache_key)
        return state

    async def _submit_local(
        self, job_id: str, work: Work, priority: bool, timeout: float, cache_key: str | None
    ) -> None:
        """Put the job on this process's batcher (the job failed and refused when the
        queue filled up since the check)."""
        try:
            item = self.batcher.enqueue(work, priority=priority, timeout=timeout)
        except ServeError as error:  # the queue filled up since the check
            await self.manager.failed(job_id, error)
            raise

        def withdraw() -> None:
            if not self.batcher.withdraw(item):
                log.info(
                    "job cancel reached the engine",
                    extra={"job_id": job_id, "step": self.runner.step},
                )

        live = self.manager.live(job_id)
        if live is not None:
            live.on_cancel = withdraw
        self._spawn(self._run(job_id, work, self.batcher.wait(item, timeout), cache_key))
        self.queue_changed()

    async def _submit_fleet(
        self,
        fleet: FleetJobs,
        job_id: str,
        work: Work,
        trail: Trail,
        timeout: float,
        cache_key: str | None,
    ) -> None:
        """Put the job on the fleet's queue (refused with 503 when Redis cannot take it:
        then the job is recorded failed) and follow it from this front."""
        try:
            placed = await fleet.place(
                work, key_id=trail.user or "anonymous", priority=trail.ctx.priority,
                timeout=timeout,
            )  # fmt: skip
        except ServeError as error:
            await self.manager.failed(job_id, error)
            raise

        def withdraw() -> None:  # workers skip a cancelled entry; the follower stops
            self._spawn(fleet.withdraw(work.request_id, timeout))

        live = self.manager.live(job_id)
        if live is not None:
            live.on_cancel = withdraw
        start = work.on_start
        assert start is not None
        result = fleet.follow(job_id, work, placed, timeout, start)
        self._spawn(self._run(job_id, work, result, cache_key))

    async def _run(
        self,
        job_id: str,
        work: Work,
        result: Coroutine[Any, Any, tuple[Made, BatchInfo]],
        cache_key: str | None,
    ) -> None:
        try:
            made, info = await result
        except asyncio.CancelledError:
            return  # withdrawn from the queue: the cancel is recorded already
        except ServeError as error:
            self.admission.count_refusal(error)
            self._refusals[job_id] = refusal_of(error)
            await self.manager.failed(job_id, error)
            return
        except Exception as exc:
            log.exception("job failed", extra={"job_id": job_id, "error": repr(exc)})
            await self.manager.failed(job_id, InternalError(describe_failure(exc, work)))
            return
        if work.token is not None and work.token.cancelled:
            return  # the images of a cancelled job are dropped, never delivered
        await self.admission.store(cache_key, made.images)
        await self._succeeded(job_id, made.images, info)

    async def _started(self, job_id: str, steps: int) -> None:
        # A batch that failed is split and run again: its jobs have started already.
        with contextlib.suppress(JobStateError):
            await self.manager.started(job_id, steps)

    async def _finish_cached(self, job_id: str, steps: int, images: list[GeneratedImage]) -> None:
        await self.manager.started(job_id, steps)
        await self._succeeded(job_id, images, None)

    async def _succeeded(
        self, job_id: str, images: list[GeneratedImage], info: BatchInfo | None
    ) -> None:
        trail = self._trails.get(job_id)  # read before the outcome's audit line drops it
        await self.manager.succeeded(job_id, images)
        if trail is not None and self.on_served is not None:
            await self.on_served(trail, images, info)

    # -- queue positions -------------------------------------------------------------------

    def queue_changed(self) -> None:
        """The queue moved: tell queued jobs their new places (one pass at a time)."""
        if self._repositioning is None and self._trails:
            self._repositioning = self._spawn(self._reposition())

    async def _reposition(self) -> None:
        try:
            await asyncio.sleep(0)  # let a burst of changes settle into one pass
            for position, work in self.batcher.positions().items():
                if work.job_id is not None and self.manager.live(work.job_id) is not None:
                    with contextlib.suppress(JobStateError):  # it started meanwhile
                        await self.manager.reposition(work.job_id, position)
        finally:
            self._repositioning = None

    # -- audit and shutdown ----------------------------------------------------------------

    def _audit(self, state: JobState, event: JobEvent) -> None:
        if not event.kind.terminal:
            return
        trail = self._trails.pop(state.id, None)
        refusal = self._refusals.pop(state.id, None)
        if trail is None:
            return
        if event.kind is EventKind.SUCCEEDED:
            self.admission.job_event(trail, state.id, "accepted")
        elif event.kind is EventKind.CANCELED:
            self.admission.job_event(trail, state.id, "canceled")
        else:
            error = state.error
            reason, detail = refusal or ((error.code, error.message) if error else ("failed", None))
            self.admission.job_event(trail, state.id, "rejected", reason=reason, detail=detail)

    async def finish(self, reason: str, drained: bool) -> int:
        """After the drain: let finished work record its outcome, then mark what is
        left failed with ``reason``. When the drain timed out, running jobs are
        cancelled first, so the engine stops at the next step instead of computing
        images nobody can collect. Returns how many jobs were left."""
        if not drained:
            for job_id in list(self._trails):
                live = self.manager.live(job_id)
                if live is not None:
                    live.token.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)
        return await self.manager.fail_unfinished(reason)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
