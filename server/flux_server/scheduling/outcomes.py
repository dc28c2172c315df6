"""How one batch's call ends for its members: each gets its own result or its own
error, and a call that fails as a whole is split in halves and each half run again, so
one bad request (say, out of memory at a size) fails alone and the others succeed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from flux_server.scheduling.batch_items import BatchInfo, QueueItem

log = logging.getLogger(__name__)

P = TypeVar("P")
R = TypeVar("R")

Results = Sequence[R | BaseException]
CallDone = Callable[[list[QueueItem[P, R]], Results[R], float, float], None]
"""Told of each call that returned: (its items, their results, loop time it started,
seconds it ran)."""


async def run_in_halves(
    run_batch: Callable[[Sequence[P]], Awaitable[Results[R]]],
    batch: list[QueueItem[P, R]],
    done: CallDone[P, R],
) -> None:
    """Run ``batch`` in one call; when the call fails, run each half the same way. A
    lone item whose call fails gets that error."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        results = await run_batch([item.payload for item in batch])
        if len(results) != len(batch):
            raise RuntimeError(f"batch of {len(batch)} returned {len(results)} results")
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        if len(batch) > 1:
            log.warning(
                "batch failed; splitting it",
                extra={"batch_size": len(batch), "error": repr(exc)},
            )
            half = len(batch) // 2
            await run_in_halves(run_batch, batch[:half], done)
            await run_in_halves(run_batch, batch[half:], done)
            return
        item = batch[0]
        if not item.future.done():
            item.future.set_exception(exc)
        return
    done(batch, results, started, loop.time() - started)


def call_info(batch: Sequence[QueueItem[P, R]], run_s: float) -> BatchInfo:
    """What the call was, before any member's wait is counted."""
    return BatchInfo(
        size=len(batch), units=sum(item.units for item in batch), queue_s=0.0, run_s=run_s
    )


def deliver(
    batch: Sequence[QueueItem[P, R]], results: Results[R], started: float, run_s: float
) -> None:
    """Each member its own result (or its own error), with what it learns of the call;
    a member whose caller has gone gets nothing."""
    units = sum(item.units for item in batch)
    for item, result in zip(batch, results, strict=True):
        if item.future.done():
            continue
        if isinstance(result, BaseException):
            # One member refused, the others served (an image the safety model
            # flagged): that member's error alone.
            item.future.set_exception(result)
        else:
            info = BatchInfo(
                size=len(batch), units=units, queue_s=started - item.enqueued, run_s=run_s
            )
            item.future.set_result((result, info))
