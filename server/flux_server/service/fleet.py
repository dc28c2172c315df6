"""The service's side of ``--queue``: which parts a role runs, the worker loop's
lifetime, and what ``GET /queue`` and the depth gauges read. Without ``--queue`` none
of this exists and the process works alone (``GET /queue`` then reads its batcher)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from flux_server.queue.broker import Broker, connect
from flux_server.queue.front import FleetQueue, unavailable
from flux_server.queue.status import fleet_snapshot, snapshot
from flux_server.settings import ServerSettings

if TYPE_CHECKING:
    from flux_server.metrics import Metrics
    from flux_server.scheduling.batch_items import BatchInfo
    from flux_server.scheduling.batcher import Batcher
    from flux_server.scheduling.runner import Runner

log = logging.getLogger(__name__)

# How often every process with --queue reads the streams' depth into its gauges: the
# HPA reads them at its own (coarser) period, and one read is a few Redis commands.
DEPTH_PERIOD_S = 2.0
# A worker's measured start is advice for a week: a track idle longer advises the default.
STARTUP_TTL_S = 7 * 24 * 3600.0


def worker_name() -> str:
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


class Fleet:
    """The queue client of one process: a front's FleetQueue, a worker's pull loop."""

    def __init__(self, settings: ServerSettings) -> None:
        assert settings.queue is not None
        self.settings = settings
        self.broker = Broker(connect(settings.queue, settings.queue_password))
        self.front = FleetQueue(self.broker, settings.track, settings.canary_weight)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def loads_model(self) -> bool:
        return self.settings.role != "front"

    async def start_worker(self, runner: Runner, metrics: Metrics) -> None:
        self._tasks.append(asyncio.create_task(self._gauge(metrics), name="queue-depth"))
        if self.settings.role == "front":
            return
        from flux_server.queue.worker import QueueWorker

        def observe(info: BatchInfo) -> None:
            metrics.batch_size.observe(info.size)
            metrics.inference_duration.observe(info.run_s)

        worker = QueueWorker(
            self.broker,
            runner,
            track=self.settings.track,
            name=worker_name(),
            max_units=self.settings.max_batch_size,
            visibility=self.settings.visibility_timeout,
            on_batch=observe,
            max_pixels=self.settings.max_image_pixels,
        )
        self._tasks.append(asyncio.create_task(worker.run(self._stop), name="queue-worker"))
        started = runner.startup.total
        with contextlib.suppress(RedisError, OSError):
            # What fronts advise callers to wait while this track has no worker.
            await self.broker.record_startup(self.settings.track, started, STARTUP_TTL_S)
        log.info(
            "pulling from the queue",
            extra={"track": self.settings.track, "startup_seconds": round(started, 3)},
        )

    async def status(self) -> dict[str, Any]:
        """``GET /queue``: 503 with ``Retry-After`` when the queue is unreachable."""
        try:
            return await fleet_snapshot(self.broker)
        except (RedisError, OSError) as exc:
            raise unavailable(exc) from None

    async def _gauge(self, metrics: Metrics) -> None:
        """Every front and worker reports the fleet's depth, so any of them can be scraped."""
        while not self._stop.is_set():
            try:
                state = await fleet_snapshot(self.broker)
                metrics.set_depth(state["waiting"]["high"], state["waiting"]["normal"])
            except (RedisError, OSError) as exc:
                log.debug("queue depth unread", extra={"error": repr(exc)})
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), DEPTH_PERIOD_S)

    async def close(self, timeout: float) -> None:
        """Finish the running batch (its results are stored), then stop pulling."""
        self._stop.set()
        if self._tasks:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.gather(*self._tasks), timeout)
        await self.broker.redis.aclose()


def local_status(batcher: Batcher[Any, Any], track: str, engine_loaded: bool) -> dict[str, Any]:
    """``GET /queue`` of a process alone: its batcher, in the fleet's shape (a fleet of
    one worker, itself, once the model is loaded)."""
    high, normal, oldest = batcher.waiting()
    now = time.time()
    if oldest is not None:  # the event loop's clock → epoch seconds
        oldest = now - (asyncio.get_running_loop().time() - oldest)
    counts = {track: {"high": high, "normal": normal}}
    return snapshot("local", counts, oldest, {track: 1} if engine_loaded else {}, now)
