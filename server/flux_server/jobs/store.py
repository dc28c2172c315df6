"""Where async jobs live: the :class:`JobStore` protocol and the in-memory store.

The replica that accepted a job runs it and writes every transition to the store
(``create`` then ``save``); any caller reads it back (``load``, ``image``), watches it
(``watch``: the current state first, then each new event, ending with the terminal
one) or asks for it to be cancelled (``request_cancel``, delivered to the handler the
owner registered with ``on_cancel``).

Two stores keep that contract: :class:`MemoryJobStore` (one replica; bounded in bytes
of results by ``--job-max-bytes``, the oldest finished jobs going first) and
``RedisJobStore`` in ``flux_server.jobs.store_redis`` (``--redis-url``: every replica
answers for every job). Finished jobs are kept ``--job-ttl`` seconds; an unknown or
expired id is a :class:`~flux_server.errors.NotFound` that names the TTL.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from flux_server.errors import NotFound
from flux_server.jobs.lifecycle import Watch
from flux_server.jobs.records import JobEvent, JobState

log = logging.getLogger(__name__)

CancelHandler = Callable[[str], None]
"""Called on the owner's event loop with the id of a job someone asked to cancel."""

RECORD_OVERHEAD = 1024
"""Bytes charged per kept job besides its images (record, events, bookkeeping)."""


def not_found(job_id: str, ttl: float, bounded: bool = False) -> NotFound:
    why = f"finished jobs are kept for --job-ttl {ttl:g}s"
    if bounded:
        why += " and within --job-max-bytes"
    return NotFound(f"no job {job_id}: unknown or expired ({why})", "id")


@runtime_checkable
class JobStore(Protocol):
    """What the server needs of a job store."""

    ttl: float

    async def start(self) -> None:
        """Begin listening for cancels (a no-op for memory)."""

    async def close(self) -> None: ...

    async def create(self, state: JobState, event: JobEvent) -> None:
        """Record a new job; ``Unavailable`` when it could not be recorded (then the
        job must not be accepted)."""

    async def save(
        self, state: JobState, event: JobEvent | None, images: Sequence[bytes] | None = None
    ) -> None:
        """Record a transition (and, on success, the images' bytes) and tell watchers."""

    async def load(self, job_id: str) -> JobState:
        """The job's current state; ``NotFound`` naming the TTL."""

    def missing(self, job_id: str) -> NotFound:
        """What :meth:`load` raises for an unknown id (also answered for another user's
        job, so its existence is not told)."""

    async def image(self, job_id: str, index: int) -> bytes:
        """The bytes of image ``index`` of a succeeded job; ``NotFound``."""

    def watch(self, job_id: str) -> AsyncIterator[JobEvent]:
        """The current state as events, then every new event until the terminal one."""

    async def request_cancel(self, job_id: str) -> JobState:
        """Ask the job's owner to cancel it; returns the state as it was (``NotFound``)."""

    def on_cancel(self, handler: CancelHandler) -> None:
        """Register this replica's handler of cancel requests."""


@dataclass
class _Entry:
    state: JobState
    images: list[bytes] = field(default_factory=list)
    watchers: set[asyncio.Queue[JobEvent]] = field(default_factory=set)

    @property
    def cost(self) -> int:
        return RECORD_OVERHEAD + sum(len(image) for image in self.images)


class MemoryJobStore:
    """Jobs in this process. Single event loop and no awaits while the dicts change:
    no lock. Jobs still queued or running are never evicted."""

    def __init__(
        self, ttl: float, max_bytes: int, *, clock: Callable[[], float] = time.time
    ) -> None:
        if ttl <= 0 or max_bytes <= 0:
            raise ValueError("job ttl and max bytes must be positive")
        self.ttl = ttl
        self.max_bytes = max_bytes
        self.size_bytes = 0
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()  # oldest completion first
        self._handlers: list[CancelHandler] = []

    def __len__(self) -> int:
        return len(self._entries)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._entries.clear()
        self._finished.clear()
        self.size_bytes = 0

    def _expire(self) -> None:
        horizon = self._clock() - self.ttl
        while self._finished:
            job_id = next(iter(self._finished))
            completed = self._entries[job_id].state.completed_at
            if completed is None or completed > horizon:
                break
            self._drop(job_id)

    def _drop(self, job_id: str) -> None:
        entry = self._entries.pop(job_id)
        self._finished.pop(job_id, None)
        self.size_bytes -= entry.cost

    def missing(self, job_id: str) -> NotFound:
        return not_found(job_id, self.ttl, bounded=True)

    def _entry(self, job_id: str) -> _Entry:
        self._expire()
        entry = self._entries.get(job_id)
        if entry is None:
            raise self.missing(job_id)
        return entry

    async def create(self, state: JobState, event: JobEvent) -> None:
        self._expire()
        if state.id in self._entries:
            raise ValueError(f"job {state.id} exists")
        entry = _Entry(state)
        self._entries[state.id] = entry
        self.size_bytes += entry.cost
        self._make_room()

    async def save(
        self, state: JobState, event: JobEvent | None, images: Sequence[bytes] | None = None
    ) -> None:
        entry = self._entry(state.id)
        self.size_bytes -= entry.cost
        entry.state = state
        if images is not None:
            entry.images = list(images)
        self.size_bytes += entry.cost
        if state.status.terminal:
            self._finished[state.id] = None
        if event is not None:
            for queue in list(entry.watchers):
                queue.put_nowait(event)
        self._make_room(keep=state.id)

    def _make_room(self, keep: str | None = None) -> None:
        for job_id in list(self._finished):
            if self.size_bytes <= self.max_bytes:
                return
            if job_id != keep:
                log.info("job evicted for --job-max-bytes", extra={"job_id": job_id})
                self._drop(job_id)

    async def load(self, job_id: str) -> JobState:
        return self._entry(job_id).state

    async def image(self, job_id: str, index: int) -> bytes:
        entry = self._entry(job_id)
        if not 0 <= index < len(entry.images):
            raise NotFound(f"job {job_id} has no image {index}", "index")
        return entry.images[index]

    async def watch(self, job_id: str) -> AsyncIterator[JobEvent]:
        entry = self._entry(job_id)
        queue: asyncio.Queue[JobEvent] = asyncio.Queue()
        entry.watchers.add(queue)
        try:
            watch = Watch()
            for event in watch.start(entry.state):
                yield event
            while not watch.done:
                for event in watch.event(await queue.get()):
                    yield event
        finally:
            entry.watchers.discard(queue)

    async def request_cancel(self, job_id: str) -> JobState:
        state = self._entry(job_id).state
        if not state.status.terminal:
            for handler in self._handlers:
                handler(job_id)
        return state

    def on_cancel(self, handler: CancelHandler) -> None:
        self._handlers.append(handler)
