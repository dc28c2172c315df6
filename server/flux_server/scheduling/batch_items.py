"""What the batcher holds: a queued request, what a result learns about its call, and
the requests announced on their way in."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

P = TypeVar("P")
R = TypeVar("R")


@dataclass(frozen=True)
class BatchInfo:
    """What a result learns about the call it ran in."""

    size: int  # requests in the call
    units: int  # images in the call
    queue_s: float  # this request's wait
    run_s: float  # the call's duration


class Arrivals:
    """How many requests are on their way to the queue (announced, not yet queued); the
    worker is woken whenever one arrives or gives up."""

    def __init__(self, wakeup: asyncio.Event) -> None:
        self.count = 0
        self._wakeup = wakeup

    def announce(self) -> Arrival:
        return Arrival(self)

    def _ended(self) -> None:
        self.count -= 1
        self._wakeup.set()


class Arrival:
    """A request on its way to the queue (see :meth:`Batcher.arrival`). Ends when it is
    queued or gives up, whichever is first; ending twice is harmless."""

    def __init__(self, arrivals: Arrivals) -> None:
        self._arrivals: Arrivals | None = arrivals
        arrivals.count += 1

    def end(self) -> None:
        if self._arrivals is not None:
            self._arrivals._ended()
            self._arrivals = None


@dataclass(eq=False)
class QueueItem(Generic[P, R]):
    """One waiting or running request."""

    payload: P
    key: Hashable
    units: int
    priority: bool
    deadline: float  # loop time
    enqueued: float
    seq: int
    future: asyncio.Future[tuple[R, BatchInfo]] = field(repr=False)
    started: bool = False
