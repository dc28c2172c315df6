"""The requests waiting for the engine: a priority lane and a normal lane, each in
order of arrival.

Bookkeeping only, no waiting: the :class:`~flux_server.scheduling.batcher.Batcher`'s
worker decides *when* a batch starts; the lanes say *what* it takes (the head and the
compatible requests that fit with it), and report their depth whenever it changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from flux_server.errors import DeadlineExceeded
from flux_server.scheduling.batch_items import QueueItem

P = TypeVar("P")
R = TypeVar("R")


class Lanes(Generic[P, R]):
    """The waiting requests. A batch holds up to ``max_batch_size`` units (images) of
    one key; a single request larger than that still runs, alone."""

    def __init__(self, max_batch_size: int, on_depth: Callable[[int], None] | None) -> None:
        self.max_batch_size = max_batch_size
        self.priority: list[QueueItem[P, R]] = []
        self.normal: list[QueueItem[P, R]] = []
        self._on_depth = on_depth

    @property
    def depth(self) -> int:
        return len(self.normal) + len(self.priority)

    def waiting(self) -> tuple[int, int, float | None]:
        """(priority, normal) requests waiting and the oldest one's enqueue time."""
        times = [i.enqueued for i in self.priority + self.normal]
        return len(self.priority), len(self.normal), min(times, default=None)

    def positions(self) -> dict[int, P]:
        """The waiting payloads by 0-based place: the priority lane first, each lane in
        order of arrival (the order the worker takes them, batching aside)."""
        waiting = [i for i in self.priority + self.normal if not i.future.done()]
        return dict(enumerate(item.payload for item in waiting))

    def add(self, item: QueueItem[P, R]) -> None:
        (self.priority if item.priority else self.normal).append(item)
        self.depth_changed()

    def remove(self, item: QueueItem[P, R]) -> None:
        """Take a waiting item out (gone already: nothing to do)."""
        lane = self.priority if item.priority else self.normal
        if item in lane:
            lane.remove(item)
            self.depth_changed()

    def clear(self) -> list[QueueItem[P, R]]:
        """Empty both lanes; return what waited in them."""
        items = self.normal + self.priority
        self.normal.clear()
        self.priority.clear()
        self.depth_changed()
        return items

    def units_for(self, head: QueueItem[P, R]) -> int:
        """The units a batch headed by ``head`` would hold if it started now."""
        total = 0
        for item in self.normal:
            if item.key == head.key and total + item.units <= self._capacity(head):
                total += item.units
        return total

    def take(self, lane: list[QueueItem[P, R]], head: QueueItem[P, R]) -> list[QueueItem[P, R]]:
        """Remove and return ``head`` and the compatible requests that fit with it (a
        request whose caller has gone is dropped and takes no room)."""
        batch: list[QueueItem[P, R]] = []
        total = 0
        for item in list(lane):
            if item.key != head.key or total + item.units > self._capacity(head):
                continue
            lane.remove(item)
            if item.future.done():
                continue
            batch.append(item)
            total += item.units
        self.depth_changed()
        return batch

    def take_priority(self) -> list[QueueItem[P, R]]:
        return self.take(self.priority, self.priority[0]) if self.priority else []

    def put_back(self, items: list[QueueItem[P, R]]) -> None:
        """Items offered at a step and not taken: the head of the priority lane again."""
        for item in items:
            item.started = False
        self.priority[:0] = items
        self.depth_changed()

    def expire(self, now: float) -> None:
        """Drop the items whose caller has gone or whose deadline has passed."""
        for lane in (self.priority, self.normal):
            for item in [i for i in lane if i.future.done() or i.deadline <= now]:
                lane.remove(item)
                if not item.future.done():
                    item.future.set_exception(
                        DeadlineExceeded("the request's deadline passed while it waited")
                    )
        self.depth_changed()

    def _capacity(self, head: QueueItem[P, R]) -> int:
        return max(self.max_batch_size, head.units)

    def depth_changed(self) -> None:
        if self._on_depth is not None:
            self._on_depth(self.depth)
