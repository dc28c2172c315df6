"""Async jobs in Redis (``--redis-url``): any replica answers for any job.

Keys, all under one prefix:

* ``{prefix}{id}``: the job's record (``JobState`` JSON). A finished job's record and
  images expire after ``--job-ttl``; a live one's after ``live_ttl`` (refreshed at
  every event), so a job whose replica died does not linger for ever.
* ``{prefix}{id}:image:{i}``: the bytes of image ``i``, written in the same
  transaction as the ``succeeded`` record, so a reader never sees one without the other.
* channel ``{prefix}{id}:events``: each event, published in that transaction too.
* channel ``{prefix}cancel``: job ids someone asked to cancel; every replica listens,
  and the one running the job (its ``on_cancel`` handler knows it) stops it.

A watcher subscribes before it reads the record, so no event falls between the two;
when the channel is quiet for ``poll_interval`` it reads the record again, so even a
lost message (a Redis restart) is caught up with. Redis down means ``Unavailable``
for ``create`` (a job must not be accepted where nobody can find it), ``load``,
``image`` and ``request_cancel``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from flux_server.admission.redis_link import connect, outage_errors
from flux_server.errors import NotFound, Unavailable
from flux_server.jobs.lifecycle import Watch
from flux_server.jobs.records import JobEvent, JobState
from flux_server.jobs.store import CancelHandler, not_found

log = logging.getLogger(__name__)

PREFIX = "fluxserve:job:"


class RedisJobStore:
    def __init__(
        self,
        url: str,
        ttl: float,
        *,
        live_ttl: float = 24 * 3600,
        timeout: float = 2.0,
        poll_interval: float = 5.0,
        prefix: str = PREFIX,
    ) -> None:
        if ttl <= 0:
            raise ValueError(f"--job-ttl must be positive, got {ttl}")
        self.ttl = ttl
        self.ttl_ms = max(1, round(ttl * 1000))
        self.live_ttl_ms = max(self.ttl_ms, round(live_ttl * 1000))
        self.poll_interval = poll_interval
        self.prefix = prefix
        self._errors = outage_errors()
        self._handlers: list[CancelHandler] = []
        self._listener: asyncio.Task[None] | None = None
        # One retry: after a Redis restart every pooled connection is stale, and its
        # first command would fail although Redis is back.
        self._client = connect(url, timeout=timeout, retries=1)
        # Subscriptions wait for messages as long as they like: no read timeout.
        self._subscriber = connect(url, timeout=timeout, retries=1, read_timeout=False)

    # --- keys --------------------------------------------------------------------------

    def _key(self, job_id: str) -> str:
        return self.prefix + job_id

    def _image_key(self, job_id: str, index: int) -> str:
        return f"{self.prefix}{job_id}:image:{index}"

    def _channel(self, job_id: str) -> str:
        return f"{self.prefix}{job_id}:events"

    @property
    def cancel_channel(self) -> str:
        return self.prefix + "cancel"

    @property
    def owners_key(self) -> str:
        """The set of replicas that have (had) unfinished jobs."""
        return self.prefix + "owners"

    def owned_key(self, owner: str) -> str:
        """The set of ``owner``'s unfinished jobs."""
        return f"{self.prefix}owned:{owner}"

    def heartbeat_key(self, owner: str) -> str:
        return f"{self.prefix}replica:{owner}"

    @property
    def client(self) -> Any:
        """The Redis client (for :mod:`flux_server.jobs.reaper`)."""
        return self._client

    @property
    def outage_errors(self) -> tuple[type[BaseException], ...]:
        return self._errors

    def _unavailable(self, exc: BaseException, doing: str) -> Unavailable:
        log.warning(
            "redis job store unreachable", extra={"doing": doing, "error": type(exc).__name__}
        )
        return Unavailable(f"async jobs need Redis, which is unreachable ({doing}): {exc}")

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen_for_cancels())

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        await self._client.aclose()
        await self._subscriber.aclose()

    async def _listen_for_cancels(self) -> None:
        """Deliver cancel requests to this replica's handlers; resubscribe after an
        outage (a cancel sent while Redis was down was refused to its sender)."""
        delay = 0.1
        while True:
            pubsub = self._subscriber.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.cancel_channel)
                delay = 0.1
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    self._deliver_cancel(_text(message["data"]))
            except self._errors as exc:
                log.debug("cancel listener lost redis: %s", exc)
            finally:
                with contextlib.suppress(*self._errors):
                    await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _deliver_cancel(self, job_id: str) -> None:
        for handler in self._handlers:
            try:
                handler(job_id)
            except Exception:  # one bad handler must not end the listener
                log.exception("cancel handler failed", extra={"job_id": job_id})

    def on_cancel(self, handler: CancelHandler) -> None:
        self._handlers.append(handler)

    # --- writes --------------------------------------------------------------------------

    async def create(self, state: JobState, event: JobEvent) -> None:
        try:
            created = await self._client.set(
                self._key(state.id), state.to_record(), px=self.live_ttl_ms, nx=True
            )
            if created:  # the owner's unfinished jobs, for the reaper (job_reaper)
                async with self._client.pipeline(transaction=True) as pipe:
                    pipe.sadd(self.owned_key(state.owner), state.id)
                    pipe.sadd(self.owners_key, state.owner)
                    await pipe.execute()
        except self._errors as exc:
            raise self._unavailable(exc, "recording a new job") from None
        if not created:
            raise ValueError(f"job {state.id} exists")

    async def save(
        self, state: JobState, event: JobEvent | None, images: Sequence[bytes] | None = None
    ) -> None:
        ttl_ms = self.ttl_ms if state.status.terminal else self.live_ttl_ms
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                for index, data in enumerate(images or ()):
                    pipe.set(self._image_key(state.id, index), data, px=ttl_ms)
                pipe.set(self._key(state.id), state.to_record(), px=ttl_ms)
                if state.status.terminal:
                    pipe.srem(self.owned_key(state.owner), state.id)
                if event is not None:
                    pipe.publish(self._channel(state.id), event.to_message())
                await pipe.execute()
        except self._errors as exc:
            raise self._unavailable(exc, "recording a job's progress") from None

    # --- reads ---------------------------------------------------------------------------

    def missing(self, job_id: str) -> NotFound:
        return not_found(job_id, self.ttl)

    async def load(self, job_id: str) -> JobState:
        try:
            record = await self._client.get(self._key(job_id))
        except self._errors as exc:
            raise self._unavailable(exc, "reading a job") from None
        if record is None:
            raise self.missing(job_id)
        return JobState.from_record(record)

    async def image(self, job_id: str, index: int) -> bytes:
        state = await self.load(job_id)
        if not 0 <= index < len(state.images):
            raise NotFound(f"job {job_id} has no image {index}", "index")
        try:
            data = await self._client.get(self._image_key(job_id, index))
        except self._errors as exc:
            raise self._unavailable(exc, "reading a job's image") from None
        if data is None:
            raise self.missing(job_id)
        return data.encode() if isinstance(data, str) else bytes(data)

    async def watch(self, job_id: str) -> AsyncIterator[JobEvent]:
        pubsub = self._subscriber.pubsub(ignore_subscribe_messages=True)
        try:
            try:
                await pubsub.subscribe(self._channel(job_id))
            except self._errors as exc:
                raise self._unavailable(exc, "watching a job") from None
            watch = Watch()
            for event in watch.start(await self.load(job_id)):
                yield event
            while not watch.done:
                try:
                    message = await pubsub.get_message(timeout=self.poll_interval)
                except self._errors as exc:
                    raise self._unavailable(exc, "watching a job") from None
                if message is None or message.get("type") != "message":
                    # Quiet: read the record, in case a message was lost.
                    news = watch.reread(await self.load(job_id))
                else:
                    news = watch.event(JobEvent.from_message(message["data"]))
                for event in news:
                    yield event
        finally:
            with contextlib.suppress(*self._errors):
                await pubsub.aclose()

    async def request_cancel(self, job_id: str) -> JobState:
        state = await self.load(job_id)
        if state.status.terminal:
            return state
        try:
            await self._client.publish(self.cancel_channel, job_id)
        except self._errors as exc:
            raise self._unavailable(exc, "sending a cancel") from None
        return state


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
