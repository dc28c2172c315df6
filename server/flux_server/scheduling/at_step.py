"""The batcher's priority lane at the step (``--priority-at-step``): a priority request
that arrives while a batch runs is offered to that batch's next denoising step boundary
(``Runner.run_at_step``, the running call paused) instead of waiting for the call to
end. When the running call ends before taking it, it goes back to the head of the lane
and runs as the next batch, as it would have without this."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from flux_server.execution.step_priority import NotTaken
from flux_server.scheduling.batch_items import BatchInfo, QueueItem

log = logging.getLogger(__name__)

P = TypeVar("P")
R = TypeVar("R")

RunAtStep = Callable[[Sequence[P]], Awaitable[Sequence[R | BaseException]]]
"""Runs payloads at the running call's next step boundary; raises NotTaken otherwise."""


class AtStepLane(Generic[P, R]):
    """Offers the head of the priority lane to the running call, one batch at a time."""

    def __init__(
        self,
        run_at_step: RunAtStep[P, R],
        take: Callable[[], list[QueueItem[P, R]]],
        put_back: Callable[[list[QueueItem[P, R]]], None],
        busy: Callable[[], bool],
    ) -> None:
        self._run_at_step = run_at_step
        self._take, self._put_back, self._busy = take, put_back, busy
        self._task: asyncio.Task[None] | None = None

    def arrived(self) -> None:
        """A priority request was queued: offer it if a call runs and no offer is out."""
        if self._busy() and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._serve(), name="priority-at-step")

    async def settled(self) -> None:
        """Wait for the offer out to end (the running call ended: served or put back)."""
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while self._busy():
            batch = self._take()
            if not batch:
                return
            for item in batch:
                item.started = True
            started = loop.time()
            try:
                results = await self._run_at_step([item.payload for item in batch])
            except NotTaken:
                self._put_back(batch)
                return
            except Exception as exc:
                log.warning("priority work at a step failed", extra={"error": repr(exc)})
                _settle(batch, exc=exc)
                continue
            _settle(batch, results=results, started=started, now=loop.time())


def _settle(
    batch: list[QueueItem[Any, Any]],
    *,
    results: Sequence[Any] = (),
    exc: BaseException | None = None,
    started: float = 0.0,
    now: float = 0.0,
) -> None:
    units = sum(item.units for item in batch)
    for i, item in enumerate(batch):
        if item.future.done():
            continue
        if exc is not None:
            item.future.set_exception(exc)
        elif isinstance(results[i], BaseException):  # that member alone refused
            item.future.set_exception(results[i])
        else:
            info = BatchInfo(len(batch), units, started - item.enqueued, now - started)
            item.future.set_result((results[i], info))
