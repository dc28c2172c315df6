"""The trimmer after large requests: debounced, and always ending with a trim a full
interval after the last large request (gRPC frees a call's buffers after its done
callback, so a trim that runs as a burst ends can miss them)."""

from __future__ import annotations

import asyncio
import time

from flux_server.memory import LARGE_MESSAGE_BYTES, Trimmer


def _burst(trimmer: Trimmer, *, requests: int, gap: float) -> float:
    """``requests`` large requests ``gap`` seconds apart, then quiet; when the last ended."""

    async def run() -> float:
        for _ in range(requests):
            trimmer.after(LARGE_MESSAGE_BYTES)
            last = time.monotonic()
            await asyncio.sleep(gap)
        await asyncio.sleep(trimmer.interval * 4)
        return last

    return asyncio.run(run())


def test_a_burst_ends_with_a_trim_an_interval_after_its_last_request() -> None:
    trims: list[float] = []
    trimmer = Trimmer(interval=0.1, trim=lambda: trims.append(time.monotonic()))
    last = _burst(trimmer, requests=12, gap=0.02)
    assert trims, "no trim ran"
    assert trims[-1] >= last + trimmer.interval * 0.9, (trims, last)
    # Debounced: a trim per interval while the burst lasts, not one per request.
    assert len(trims) <= 12 * 0.02 / 0.1 + 3


def test_small_requests_schedule_nothing() -> None:
    trims: list[float] = []
    trimmer = Trimmer(interval=0.05, trim=lambda: trims.append(time.monotonic()))

    async def run() -> None:
        trimmer.after(LARGE_MESSAGE_BYTES - 1)
        await asyncio.sleep(0.2)

    asyncio.run(run())
    assert trims == []


def test_without_malloc_trim_nothing_is_scheduled() -> None:
    async def run() -> None:
        Trimmer(trim=None).after(LARGE_MESSAGE_BYTES * 4)

    asyncio.run(run())
