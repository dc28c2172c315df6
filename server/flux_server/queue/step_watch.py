"""What a worker hears while its batch runs: priority work arriving and cancels of the
entries it runs. Both act at the running call's next denoising step boundary: priority
work is offered to it (``Runner.run_at_step``, the call paused), a cancelled entry's
token stops it once every member is cancelled (``BatchCancellation``).

One subscription for the worker's life: the track's wake channel (a front publishes the
priority of each new entry there) and the cancel channel (a front publishes the request
id it withdraws). A message lost to a reconnect costs at most ``poll_s``: then the
watcher asks Redis directly, every ``poll_s`` however busy the channels are.

Priority work is read whenever a batch starts (an entry that came while the worker was
between batches, its wake heard with no call to take it, is offered at the new call's
first boundary instead of waiting for the whole call), and read again after each offer
until the lane is empty: a priority request that arrives while another is being served
is served next, at a later boundary of the same call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from redis.exceptions import RedisError

from flux_server.execution.cancellation import CancelToken
from flux_server.queue import names
from flux_server.queue.broker import Broker

log = logging.getLogger(__name__)


class StepWatch:
    """Turns wake and cancel messages into actions on the running batch."""

    def __init__(
        self,
        broker: Broker,
        track: str,
        serve_priority: Callable[[], Coroutine[Any, Any, bool]],
        *,
        poll_s: float = 1.0,
    ) -> None:
        self.broker, self.track = broker, track
        self._serve_priority = serve_priority
        self.poll_s = poll_s
        self.tokens: dict[str, CancelToken] = {}  # the running entries', by request id
        self.serving: asyncio.Task[None] | None = None
        self._again = False  # priority work announced while an offer was out

    def running(self, tokens: Mapping[str, CancelToken]) -> None:
        """A batch started (or, with an empty mapping, ended). Started: priority work
        already waiting is offered to it now, not only when a wake is heard."""
        self.tokens = dict(tokens)
        if self.tokens:
            self._priority()

    async def settled(self) -> None:
        """Wait for the priority work being offered to end (served, or handed back)."""
        task = self.serving
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run(self, stop: asyncio.Event) -> None:
        pubsub = self.broker.redis.pubsub()
        try:
            await pubsub.subscribe(names.wake(self.track), names.cancels())
            polled = time.monotonic()
            while not stop.is_set():
                try:
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=self.poll_s
                    )
                    if message is not None:
                        self._heard(str(message["channel"]), str(message["data"]))
                    if message is None or time.monotonic() - polled >= self.poll_s:
                        polled = time.monotonic()
                        await self._poll()
                except RedisError as exc:
                    log.debug("step watch unreachable", extra={"error": repr(exc)})
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(stop.wait(), self.poll_s)
        finally:
            await self.settled()
            with contextlib.suppress(RedisError):
                await pubsub.aclose()

    def _heard(self, channel: str, data: str) -> None:
        if channel == names.cancels():
            self._cancel(data)
        elif data == names.PRIORITIES[0]:
            self._priority()

    def _cancel(self, request_id: str) -> None:
        token = self.tokens.get(request_id)
        if token is not None and not token.cancelled:
            token.cancel()
            log.info("queued work cancel heard", extra={"request_id": request_id})

    def _priority(self) -> None:
        """Offer priority work to the running batch, one offer at a time; announced
        while one is out, it is read when that one ends."""
        if not self.tokens:
            return
        if self.serving is not None and not self.serving.done():
            self._again = True
            return
        self._again = False
        self.serving = asyncio.create_task(self._serve(), name="priority-at-step")

    async def _serve(self) -> None:
        """Offers until the lane is empty, or the running call ends."""
        while self.tokens:
            self._again = False
            served = await self._serve_priority()
            if not served and not self._again:
                return

    async def _poll(self) -> None:
        """What a lost message would have said."""
        if not self.tokens:
            return
        cancelled = await self.broker.redis.exists(
            *[names.cancelled(request_id) for request_id in self.tokens]
        )
        if cancelled:
            for request_id in list(self.tokens):
                if await self.broker.redis.exists(names.cancelled(request_id)):
                    self._cancel(request_id)
        if await self.broker.redis.zcard(names.class_keys(self.track, names.PRIORITIES[0])):
            self._priority()
