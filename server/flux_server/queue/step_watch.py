"""What a worker hears while its batch runs: priority work arriving and cancels of the
entries it runs. Both act at the running call's next denoising step boundary: priority
work is offered to it (``Runner.run_at_step``, the call paused), a cancelled entry's
token stops it once every member is cancelled (``BatchCancellation``).

One subscription for the worker's life: the track's wake channel (a front publishes the
priority of each new entry there) and the cancel channel (a front publishes the request
id it withdraws). A message lost to a reconnect costs at most ``poll_s``: then the
watcher asks Redis directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
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
        serve_priority: Callable[[], Coroutine[Any, Any, None]],
        *,
        poll_s: float = 1.0,
    ) -> None:
        self.broker, self.track = broker, track
        self._serve_priority = serve_priority
        self.poll_s = poll_s
        self.tokens: dict[str, CancelToken] = {}  # the running entries', by request id
        self.serving: asyncio.Task[None] | None = None

    def running(self, tokens: Mapping[str, CancelToken]) -> None:
        """A batch started (or, with an empty mapping, ended)."""
        self.tokens = dict(tokens)

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
            while not stop.is_set():
                try:
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=self.poll_s
                    )
                    if message is None:
                        await self._poll()
                    else:
                        self._heard(str(message["channel"]), str(message["data"]))
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
        """Offer priority work to the running batch, once at a time."""
        if not self.tokens or (self.serving is not None and not self.serving.done()):
            return
        self.serving = asyncio.create_task(self._serve_priority(), name="priority-at-step")

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
