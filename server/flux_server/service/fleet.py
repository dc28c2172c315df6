"""The service's side of ``--queue``: which parts a role runs, and the worker loop's
lifetime. Without ``--queue`` none of this exists and the process works alone."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from typing import TYPE_CHECKING

from flux_server.queue.broker import Broker, connect
from flux_server.queue.front import FleetQueue
from flux_server.settings import ServerSettings

if TYPE_CHECKING:
    from flux_server.metrics import Metrics
    from flux_server.scheduling.batch_items import BatchInfo
    from flux_server.scheduling.runner import Runner

log = logging.getLogger(__name__)


def worker_name() -> str:
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


class Fleet:
    """The queue client of one process: a front's FleetQueue, a worker's pull loop."""

    def __init__(self, settings: ServerSettings) -> None:
        assert settings.queue is not None
        self.settings = settings
        self.broker = Broker(connect(settings.queue, settings.queue_password))
        self.front = FleetQueue(self.broker, settings.track)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def loads_model(self) -> bool:
        return self.settings.role != "front"

    async def start_worker(self, runner: Runner, metrics: Metrics) -> None:
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
        )
        self._task = asyncio.create_task(worker.run(self._stop), name="queue-worker")
        log.info("pulling from the queue", extra={"track": self.settings.track})

    async def close(self, timeout: float) -> None:
        """Finish the running batch (its results are stored), then stop pulling."""
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._task, timeout)
        await self.broker.redis.aclose()
