"""Jobs whose replica died: every replica heartbeats, and any live one ends the jobs of
a replica whose heartbeat has lapsed (Redis job store only; in memory, a job dies with
its replica's memory).

Keys, beside the store's (:mod:`flux_server.jobs.store_redis`):

* ``{prefix}replica:{owner}``: the heartbeat, set every ``interval`` with a TTL of
  ``3 x interval``; gone = the replica is lost;
* ``{prefix}owned:{owner}``: its unfinished jobs (added at submission, removed in the
  transaction that records the terminal state); ``{prefix}owners``: who has some.

Each beat, a replica looks for owners without a heartbeat and applies
:func:`orphan_action` to each of their jobs, in a transaction that re-reads the record
(``WATCH``), so two reapers, or a reaper and a cancel, never both end a job. Today the
action is ``fail`` with reason ``replica_lost``; the fleet queue will answer ``requeue``
there, the one place that decides. The terminal event is published with the record (an
SSE or WatchJob stream ends with it) and the job's webhook is sent by the reaper.

A replica restarted under the same name (a container restart keeps ``POD_NAME``) first
ends what its previous run left: nothing is live in a process that has just started.
After a Redis outage a replica reaps nothing until its own heartbeat has stood for a
full TTL again, so replicas that could not beat during the outage are not taken for lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from flux_server.jobs import http_views
from flux_server.jobs import lifecycle as jobs
from flux_server.jobs.records import JobError, JobEvent, JobState

if TYPE_CHECKING:
    from flux_server.jobs.store_redis import RedisJobStore


class JobHost(Protocol):
    """What the reaper needs of :class:`flux_server.jobs.manager.JobManager` (which
    owns the reaper: a Protocol, so the two modules do not import each other)."""

    owner: str
    webhooks: Any
    allow: Any
    store: Any

    @property
    def clock(self) -> Callable[[], float]: ...

    @property
    def resolve(self) -> Any: ...

    def live(self, job_id: str) -> Any: ...


log = logging.getLogger(__name__)

Transition = Callable[[JobState], tuple[JobState, JobEvent | None]]


@dataclass(frozen=True)
class OrphanAction:
    """What becomes of a lost replica's job: ``fail`` it with ``error`` (or, once the
    fleet queue exists, ``requeue`` it)."""

    kind: str
    error: JobError | None = None


def orphan_action(state: JobState) -> OrphanAction:
    """The decision for an unfinished job whose owner's heartbeat lapsed. Pure."""
    where = "running" if state.status is jobs.JobStatus.RUNNING else "queued"
    return OrphanAction(
        "fail",
        JobError(
            "replica_lost",
            f"the replica {state.owner or '?'} that held this job ({where}) stopped; "
            "submit it again",
        ),
    )


async def take_over(
    store: RedisJobStore, job_id: str, transition: Transition
) -> tuple[JobState, JobEvent | None] | None:
    """Apply ``transition`` to an unfinished job, atomically against other writers; the
    new state and its event, or None when the job is gone or already finished."""
    from redis.exceptions import WatchError

    key = store._key(job_id)
    for _ in range(5):
        async with store.client.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(key)
                record = await pipe.get(key)
                if record is None:
                    return None
                state = JobState.from_record(record)
                if state.status.terminal:
                    await pipe.unwatch()
                    return None
                new_state, event = transition(state)
                pipe.multi()
                pipe.set(key, new_state.to_record(), px=store.ttl_ms)
                pipe.srem(store.owned_key(state.owner), job_id)
                if event is not None:
                    pipe.publish(store._channel(job_id), event.to_message())
                await pipe.execute()
                return new_state, event
            except WatchError:
                continue
    return None


class Reaper:
    """This replica's heartbeat, and the reaping of lost replicas' jobs."""

    def __init__(
        self,
        manager: JobHost,
        store: RedisJobStore,
        interval: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.manager = manager
        self.store = store
        self.interval = interval
        self.ttl_ms = max(1, round(interval * 3000))
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._steady_since: float | None = None  # monotonic; None: not beating
        self._stop = asyncio.Event()

    async def start(self) -> None:
        """End what a previous run under this name left (before this one accepts a
        job: nothing is live yet), then beat and reap in the background."""
        if self._task is not None:
            return
        with contextlib.suppress(*self.store.outage_errors):
            await self.reap(self.manager.owner, skip_live=True)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="reaper")

    async def close(self) -> None:
        if self._task is not None:
            # Stopped between beats, not cancelled in the middle of a Redis command.
            self._stop.set()
            done, _ = await asyncio.wait({self._task}, timeout=self.interval + 5)
            if not done:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        with contextlib.suppress(*self.store.outage_errors):
            await self.store.client.delete(self.store.heartbeat_key(self.manager.owner))

    async def _run(self) -> None:
        owner = self.manager.owner
        while not self._stop.is_set():
            try:
                await self.store.client.set(self.store.heartbeat_key(owner), "1", px=self.ttl_ms)
                now = time.monotonic()
                self._steady_since = self._steady_since or now
                if now - self._steady_since >= self.ttl_ms / 1000:
                    await self.reap_lost()
            except self.store.outage_errors as exc:
                self._steady_since = None
                log.warning("job heartbeat failed", extra={"error": type(exc).__name__})
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval)

    async def lost(self, owner: str) -> bool:
        """Whether ``owner``'s heartbeat has lapsed."""
        return not await self.store.client.exists(self.store.heartbeat_key(owner))

    async def reap_lost(self) -> int:
        """End the jobs of every owner without a heartbeat; how many were ended."""
        ended = 0
        for raw in await self.store.client.smembers(self.store.owners_key):
            owner = raw.decode() if isinstance(raw, bytes) else str(raw)
            if owner != self.manager.owner and await self.lost(owner):
                ended += await self.reap(owner)
        return ended

    async def reap(self, owner: str, skip_live: bool = False) -> int:
        client = self.store.client
        ended = 0
        for raw in await client.smembers(self.store.owned_key(owner)):
            job_id = raw.decode() if isinstance(raw, bytes) else str(raw)
            if skip_live and self.manager.live(job_id) is not None:
                continue
            ended += await self.end_orphan(job_id)
        if not await client.scard(self.store.owned_key(owner)):
            await client.srem(self.store.owners_key, owner)
        return ended

    async def end_orphan(self, job_id: str) -> int:
        now = self._clock()

        def decide(state: JobState) -> tuple[JobState, JobEvent | None]:
            action = orphan_action(state)
            assert action.kind == "fail" and action.error is not None  # requeue: fleet queue
            return jobs.fail(state, now=now, error=action.error)

        taken = await take_over(self.store, job_id, decide)
        if taken is None:
            return 0
        state, event = taken
        log.warning(
            "job of a lost replica ended",
            extra={"job_id": job_id, "owner": state.owner, "status": state.status.value},
        )
        await send_webhook(self.manager, state, event)
        return 1


async def send_webhook(manager: JobHost, state: JobState, event: JobEvent | None) -> None:
    """The job's webhook for ``event``, sent from this replica (its owner is gone)."""
    if manager.webhooks is None or event is None or not state.webhook:
        return
    wanted = jobs.webhook_filter_of(event.kind)
    if wanted is None or wanted not in state.webhook_events_filter:
        return
    from flux_server.errors import ServeError
    from flux_server.jobs.webhook_url import check_webhook_url

    try:
        target = await check_webhook_url(state.webhook, manager.allow, manager.resolve)
    except ServeError as exc:
        log.warning("webhook of a lost job refused", extra={"job_id": state.id, "error": str(exc)})
        return
    payload: Any = http_views.job_json(state)
    manager.webhooks.offer(target, state.id, event.seq, event.kind.value, payload)


async def cancel_orphan(manager: JobHost, reaper: Reaper, job_id: str) -> JobState | None:
    """Cancel of a job live nowhere: when its owner is lost, this replica cancels it
    (recorded, published, webhook) and returns the canceled state; None when its owner
    is alive (it will act on the published request)."""
    state = await manager.store.load(job_id)
    if state.status.terminal or not await reaper.lost(state.owner):
        return None
    now = manager.clock()
    taken = await take_over(reaper.store, job_id, lambda s: jobs.cancel(s, now=now))
    if taken is None:
        return await manager.store.load(job_id)
    await send_webhook(manager, *taken)
    return taken[0]
