"""The owner's side of async jobs: one object the service and the adapters call.

:class:`JobManager` applies the state machine (``flux_server.jobs.lifecycle``) to the jobs this
replica accepted, writes each transition to the store, hands matching events to the
webhook sender, keeps the ``fluxserve_jobs`` gauge, and turns cancel requests (local,
or from another replica through the store) into the job's :class:`CancelToken` plus
the ``canceled`` outcome. Transitions of one job are applied in order under a per-job
lock, whatever thread or task reported them.

Reads (``get``, ``image``, ``watch``) go straight to the store, so with Redis any
replica answers them.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field

from flux_server.errors import InvalidRequest, NotEnabled, ServeError, Unavailable
from flux_server.execution.cancellation import CancelToken
from flux_server.execution.previews import PreviewFn, PreviewImage
from flux_server.experiments.assignment import ServedArm
from flux_server.jobs import http_views, lifecycle
from flux_server.jobs.reaper import Reaper, cancel_orphan
from flux_server.jobs.records import ImageInfo, JobError, JobEvent, JobState
from flux_server.jobs.store import JobStore, MemoryJobStore
from flux_server.jobs.webhook_url import AllowList, Resolver, WebhookTarget, check_webhook_url
from flux_server.jobs.webhook_url import system_resolver as _system_resolver
from flux_server.jobs.webhooks import WebhookSender
from flux_server.metrics import Metrics
from flux_server.requests.results import GeneratedImage

log = logging.getLogger(__name__)

Change = tuple[JobState, JobEvent | None]
Listener = Callable[[JobState, JobEvent], None]


@dataclass
class LiveJob:
    """A job this replica accepted and has not finished: what the runner needs."""

    id: str
    token: CancelToken = field(default_factory=CancelToken)
    webhook: WebhookTarget | None = None
    on_cancel: Callable[[], None] | None = None
    """Set by the service: take the job out of the queue when it is cancelled there."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(eq=False)
class JobManager:
    """The jobs of this replica: the state machine applied, stored, told to listeners,
    webhooks and watchers. ``clock`` gives the events' times, ``resolve`` webhook hosts'
    addresses."""

    store: JobStore
    _: KW_ONLY
    owner: str
    max_result_bytes: int
    webhooks: WebhookSender | None = None
    allow: AllowList = field(default_factory=AllowList)
    metrics: Metrics | None = None
    clock: Callable[[], float] = time.time
    resolve: Resolver = _system_resolver
    reaper: Reaper | None = field(default=None, init=False)  # heartbeat, lost replicas (Redis)
    _live: dict[str, LiveJob] = field(default_factory=dict, init=False)
    _states: dict[str, JobState] = field(default_factory=dict, init=False)
    _finished: collections.deque[tuple[float, str]] = field(
        default_factory=collections.deque, init=False
    )
    # Held, so that none is collected early.
    _tasks: set[asyncio.Task[object]] = field(default_factory=set, init=False)
    _listeners: list[Listener] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.store.on_cancel(self._cancel_requested)

    async def start(self) -> None:
        await self.store.start()
        if self.webhooks is not None:
            await self.webhooks.start()
        if self.reaper is not None:
            await self.reaper.start()

    async def close(self, drain_timeout: float = 0.0) -> None:
        if self.reaper is not None:
            await self.reaper.close()
        if self.webhooks is not None:
            await self.webhooks.close(drain_timeout)
        await self.store.close()

    # --- submission ------------------------------------------------------------------------

    async def check_webhook(
        self, url: str | None, events_filter: Sequence[str] | None
    ) -> tuple[WebhookTarget | None, frozenset[str]]:
        """The request's ``webhook`` and ``webhook_events_filter``, checked; errors name
        the field (400 for a refused address)."""
        try:
            wanted = lifecycle.parse_events_filter(events_filter)
        except ValueError as exc:
            raise InvalidRequest(str(exc), "webhook_events_filter") from None
        if url is None:
            return None, wanted
        if self.webhooks is None:
            raise NotEnabled("webhooks need the server started with --webhook-secret", "webhook")
        return await check_webhook_url(url, self.allow, self.resolve), wanted

    async def submit(
        self,
        *,
        position: int,
        kind: str = "generate",
        request_id: str | None = None,
        webhook: WebhookTarget | None = None,
        webhook_events_filter: frozenset[str] = lifecycle.DEFAULT_WEBHOOK_FILTER,
        experiment: ServedArm | None = None,
        user: str | None = None,
    ) -> tuple[JobState, LiveJob]:
        """Record a new queued job; ``Unavailable`` when the store cannot (then the
        request must be refused, not run)."""
        state, event = lifecycle.submit(
            lifecycle.new_job_id(),
            now=self.clock(),
            position=position,
            owner=self.owner,
            kind=kind,
            request_id=request_id,
            webhook=webhook.url if webhook else None,
            webhook_events_filter=webhook_events_filter,
            experiment=experiment,
            user=user,
        )
        await self.store.create(state, event)
        live = LiveJob(state.id, webhook=webhook)
        self._live[state.id] = live
        self._states[state.id] = state
        self._refresh_gauge()
        log.info(
            "job submitted",
            extra={"job_id": state.id, "request_id": request_id, "queue_position": position},
        )
        return state, live

    # --- what the runner reports -----------------------------------------------------------

    async def _apply(
        self,
        job_id: str,
        transition: Callable[[JobState], Change],
        images: Sequence[bytes] | None = None,
    ) -> JobState:
        live = self._live.get(job_id)
        if live is None:  # already finished (e.g. cancelled while its batch ran on)
            return await self.store.load(job_id)
        async with live.lock:
            if job_id not in self._live:
                return await self.store.load(job_id)
            state, event = transition(self._states[job_id])
            self._states[job_id] = state
            if state.status.terminal:
                self._live.pop(job_id, None)
                self._states.pop(job_id, None)
                self._finished.append((self.clock(), state.status.value))
            try:
                await self.store.save(state, event, images)
            except Unavailable as exc:
                log.error(
                    "job transition not recorded: %s",
                    exc.message,
                    extra={"job_id": job_id, "status": state.status.value},
                )
            self._refresh_gauge()
            if event is not None:
                self._notify(live, state, event, images)
                for listener in self._listeners:
                    listener(state, event)
            return state

    async def _report(self, job_id: str, transition: Callable[[JobState], Change]) -> None:
        """A transition that does not end the job: nothing to do once it has ended."""
        if job_id in self._live:
            await self._apply(job_id, transition)

    async def reposition(
        self, job_id: str, position: int, eta: float | None = None, warming_up: bool = False
    ) -> None:
        await self._report(job_id, lambda s: lifecycle.reposition(s, position, eta, warming_up))

    async def started(self, job_id: str, total_steps: int) -> None:
        await self._report(
            job_id, lambda s: lifecycle.start(s, now=self.clock(), total=total_steps)
        )

    async def step(self, job_id: str, done: int, total: int) -> None:
        await self._report(job_id, lambda s: lifecycle.step(s, done, total))

    def progress_callback(self, job_id: str) -> Callable[[int, int], None]:
        """A ``ProgressFn`` for the engine thread: each step is applied on the loop, in
        order, without the engine waiting for the store."""
        loop = asyncio.get_running_loop()

        def schedule(done: int, total: int) -> None:
            task = loop.create_task(self.step(job_id, done, total))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        def report(done: int, total: int) -> None:
            loop.call_soon_threadsafe(schedule, done, total)

        return report

    def preview_callback(self, job_id: str) -> PreviewFn:
        """A ``PreviewFn`` called on the loop: each preview becomes a ``preview`` event,
        in order with the job's progress events (the job's lock is first come, first
        served)."""

        def report(image: PreviewImage) -> None:
            task = asyncio.get_running_loop().create_task(
                self._report(job_id, lambda s: lifecycle.preview(s, image.to_json()))
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return report

    async def succeeded(self, job_id: str, images: Sequence[GeneratedImage]) -> JobState:
        size = sum(len(image.data) for image in images)
        if size > self.max_result_bytes:
            return await self.failed(
                job_id,
                JobError(
                    "resource_exhausted",
                    f"the job's images are {size} bytes, over --job-max-bytes "
                    f"{self.max_result_bytes}",
                ),
            )
        infos = [ImageInfo(i.seed, i.format, i.width, i.height, len(i.data)) for i in images]
        return await self._apply(
            job_id,
            lambda s: lifecycle.succeed(s, now=self.clock(), images=infos),
            [image.data for image in images],
        )

    async def failed(self, job_id: str, error: ServeError | JobError) -> JobState:
        if isinstance(error, ServeError):
            error = JobError(error.code, error.message, error.field)
        reason = error
        return await self._apply(
            job_id, lambda s: lifecycle.fail(s, now=self.clock(), error=reason)
        )

    async def fail_unfinished(self, reason: str) -> int:
        """At shutdown, after ``--drain-timeout``: every job still queued or running is
        marked failed with ``reason`` (never lost without a trace). Returns how many."""
        left = list(self._live)
        for job_id in left:
            live = self._live.get(job_id)
            if live is not None:
                live.token.cancel()
            await self.failed(job_id, JobError("unavailable", reason))
        return len(left)

    # --- cancellation ------------------------------------------------------------------------

    async def cancel(self, job_id: str) -> JobState:
        """Cancel a job wherever it runs. Here: at once (the token stops its pipeline
        call at the next step). Elsewhere: the request goes to the owner through the
        store, and the state returned is the one before the owner acts."""
        if job_id in self._live:
            return await self._cancel_local(job_id)
        if self.reaper is not None:
            # Its owner lost: nobody would act on the request; this replica cancels it.
            orphan = await cancel_orphan(self, self.reaper, job_id)
            if orphan is not None:
                return orphan
        return await self.store.request_cancel(job_id)

    def _cancel_requested(self, job_id: str) -> None:
        if job_id in self._live:
            task = asyncio.get_running_loop().create_task(self._cancel_local(job_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _cancel_local(self, job_id: str) -> JobState:
        live = self._live.get(job_id)
        if live is not None:
            live.token.cancel()
            if live.on_cancel is not None:
                live.on_cancel()
        log.info("job cancel requested", extra={"job_id": job_id})
        return await self._apply(job_id, lambda s: lifecycle.cancel(s, now=self.clock()))

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(state, event)`` on the loop after each transition of a job
        this replica owns is recorded (e.g. the audit line of a cancel or an outcome)."""
        self._listeners.append(listener)

    def live(self, job_id: str) -> LiveJob | None:
        return self._live.get(job_id)

    # --- reads, from any replica ------------------------------------------------------------

    async def get(self, job_id: str) -> JobState:
        return await self.store.load(job_id)

    async def image(self, job_id: str, index: int) -> bytes:
        return await self.store.image(job_id, index)

    def watch(self, job_id: str) -> AsyncIterator[JobEvent]:
        return self.store.watch(job_id)

    # --- side channels --------------------------------------------------------------------

    def _notify(
        self, live: LiveJob, state: JobState, event: JobEvent, images: Sequence[bytes] | None
    ) -> None:
        if self.webhooks is None or live.webhook is None:
            return
        wanted = lifecycle.webhook_filter_of(event.kind)
        if wanted is None or wanted not in state.webhook_events_filter:
            return
        payload = http_views.job_json(state, image_data=images if event.kind.terminal else None)
        self.webhooks.offer(live.webhook, state.id, event.seq, event.kind.value, payload)

    def _refresh_gauge(self) -> None:
        if self.metrics is None:
            return
        horizon = self.clock() - self.store.ttl
        while self._finished and self._finished[0][0] < horizon:
            self._finished.popleft()
        counts = collections.Counter(s.status.value for s in self._states.values())
        counts.update(status for _, status in self._finished)
        for status in lifecycle.JobStatus:
            self.metrics.jobs.labels(status=status.value).set(counts.get(status.value, 0))


def build_job_manager(
    *,
    owner: str,
    redis_url: str | None,
    job_ttl: float,
    job_max_bytes: int,
    webhook_secret: str | None,
    webhook_allow_hosts: Sequence[str],
    metrics: Metrics | None = None,
    longest_job: float = 24 * 3600,
    heartbeat: float = 5.0,
) -> JobManager:
    """The job manager the settings ask for (``ServerSettings`` fields of the same
    names): jobs in Redis when ``redis_url`` is set, else in memory; webhooks only with
    a secret. ``owner`` names this replica (the pod name) in job records.
    ``longest_job`` bounds how long an unfinished job's Redis record outlives its last
    event (pass ``--request-timeout``: a replica that died leaves no job "running" for
    ever). ``heartbeat``: seconds between this replica's heartbeats in Redis; another
    replica ends its jobs when 3 are missed (:mod:`flux_server.jobs.reaper`). Call
    ``await manager.start()`` on the serving loop."""
    from flux_server.jobs.store_redis import RedisJobStore

    store: JobStore
    if redis_url:
        store = RedisJobStore(redis_url, job_ttl, live_ttl=longest_job)
    else:
        store = MemoryJobStore(job_ttl, job_max_bytes)
    allow = AllowList.parse(webhook_allow_hosts)
    sender = WebhookSender(webhook_secret, allow, metrics=metrics) if webhook_secret else None
    manager = JobManager(
        store,
        owner=owner,
        max_result_bytes=job_max_bytes,
        webhooks=sender,
        allow=allow,
        metrics=metrics,
    )
    if isinstance(store, RedisJobStore):
        manager.reaper = Reaper(manager, store, heartbeat)
    return manager
