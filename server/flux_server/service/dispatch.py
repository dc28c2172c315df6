"""Admitted work through the queue, and the answer it makes: the batcher's result (or,
with ``--queue``, a generation's from the fleet's workers) turned into a
:class:`GenerationResult`, a request served in an experiment arm counted in it (its
latency, its images, its share of the pipeline call), and its request-log line."""

from __future__ import annotations

import logging

from flux_server.admission.audit_lines import Trail
from flux_server.admission.request_log import Action, log_served
from flux_server.errors import InternalError, ServeError
from flux_server.experiments.runtime import ExperimentRuntime
from flux_server.requests.results import GeneratedImage, GenerationResult
from flux_server.scheduling.batcher import Arrival, Batcher, BatchInfo
from flux_server.scheduling.runner import describe_failure
from flux_server.scheduling.work import Generation, Made, Work
from flux_server.service.fleet import Fleet
from flux_server.settings import ServerSettings

log = logging.getLogger(__name__)


class Dispatch:
    """The queue, the answer, the arm's counts."""

    def __init__(
        self,
        settings: ServerSettings,
        batcher: Batcher[Work, Made],
        experiments: ExperimentRuntime,
        fleet: Fleet | None = None,
    ) -> None:
        self.settings = settings
        self.batcher = batcher
        self.experiments = experiments
        self.fleet = fleet  # --queue: generations go through the fleet's queue

    async def run(self, work: Work, trail: Trail, arrival: Arrival) -> tuple[Made, BatchInfo]:
        """Queue ``work`` in its caller's lane, within its deadline, and wait for it; an
        unexpected failure of its pipeline call is an InternalError saying what to try."""
        ctx = trail.ctx
        timeout = ctx.timeout if ctx.timeout is not None else self.settings.request_timeout
        queued = isinstance(work, Generation) or work.fleet_entry is not None
        if self.fleet is not None and queued:
            arrival.end()  # batching happens at the workers
            made, info = await self.fleet.front.generate(
                work.request if isinstance(work, Generation) else None,
                request_id=ctx.request_id,
                key_id=trail.user or "anonymous",
                priority=ctx.priority,
                timeout=timeout,
                progress=work.progress,
                preview=work.preview,
                extra=work.fleet_entry,
            )
            return made, info
        try:
            return await self.batcher.submit(
                work, priority=ctx.priority, timeout=timeout, arrival=arrival
            )
        except ServeError:
            raise
        except Exception as exc:
            log.exception(
                "generation failed", extra={"request_id": ctx.request_id, "error": repr(exc)}
            )
            raise InternalError(describe_failure(exc, work)) from None

    async def answer(
        self,
        trail: Trail,
        images: list[GeneratedImage],
        info: BatchInfo | None,
        action: Action | None = None,
        job: bool = False,
    ) -> GenerationResult:
        """What a served request answers, counted in its arm and logged (``action``
        None: read from its endpoint; ``job``: an async job's result, stored rather than
        sent). ``info`` is None when nothing ran: a cache hit (no batch, no wait)."""
        result = GenerationResult(
            images=images,
            request_id=trail.ctx.request_id,
            release=self.settings.release,
            model=self.settings.model,
            batch_size=info.size if info is not None else 0,
            queue_ms=info.queue_s * 1000 if info is not None else 0.0,
            inference_ms=info.run_s * 1000 if info is not None else 0.0,
            total_ms=trail.elapsed_ms,
            cache_hit=info is None,
            experiment=trail.experiment,
        )
        await self._served(trail, result, info)
        log_served(trail, result, info, action, job=job)
        return result

    async def _served(self, trail: Trail, result: GenerationResult, info: BatchInfo | None) -> None:
        """Count a request served in an arm, and keep its record for feedback. The arm's
        GPU time is its share of the pipeline call, by images (a cache hit costs none)."""
        if trail.experiment is None:
            return
        images = len(result.images) if info is not None else 0
        gpu_seconds = info.run_s * images / max(1, info.units) if info is not None else 0.0
        await self.experiments.served(
            result.request_id,
            trail.experiment,
            seconds=result.total_ms / 1000,
            gpu_seconds=gpu_seconds,
            images=images,
        )
