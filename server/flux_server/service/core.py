"""The transport-free core: the flow of a generation, an edit or a question between an
API adapter (REST or gRPC) and the engine.

    admission (ready, key, [resolve], safety, [cache]) → batcher → runner (engine thread)

with the audit log, metrics and structured logs along the way. The adapters only
convert to and from their wire types and map :mod:`flux_server.errors` to statuses.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any

from flux_contract.experiment_counts import ExperimentsCounts
from flux_contract.presets import StylePreset
from flux_server.admission.audit_lines import Trail
from flux_server.admission.auth import Principal
from flux_server.admission.gate import Admission
from flux_server.errors import ServeError
from flux_server.execution.engine import ModelInfo
from flux_server.execution.previews import PreviewFn
from flux_server.experiments.feedback import FeedbackOutcome, FeedbackStore
from flux_server.experiments.runtime import ExperimentRuntime
from flux_server.jobs.access import OwnedJobs
from flux_server.jobs.async_jobs import AsyncJobs
from flux_server.jobs.fleet_jobs import FleetJobs
from flux_server.jobs.manager import JobManager, build_job_manager
from flux_server.jobs.records import JobState
from flux_server.metrics import Metrics
from flux_server.requests.context import CallContext, ProgressFn
from flux_server.requests.params import GenerateParams
from flux_server.requests.presets_store import PresetStore
from flux_server.requests.questions import answer_token_limit
from flux_server.requests.results import GeneratedImage, GenerationResult
from flux_server.scheduling.batcher import Batcher, BatchInfo
from flux_server.scheduling.runner import Runner
from flux_server.scheduling.work import Made, Work
from flux_server.service.dispatch import Dispatch
from flux_server.service.fleet import Fleet, local_status
from flux_server.service.intake import EditRequest, Intake
from flux_server.settings import ServerSettings

log = logging.getLogger(__name__)


class GenerationService:
    """The server's core. ``start()`` loads the model (in the engine thread, so the
    probes answer meanwhile); :meth:`model_info` is set once it is warm and serving."""

    def __init__(self, settings: ServerSettings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics(settings.release)
        self.presets = PresetStore(settings.presets_dir)
        self.runner = Runner(self.metrics)
        self.runner.priority_at_step = settings.priority_at_step
        # --queue: generations go through the fleet's queue (a front loads no model).
        self.fleet = Fleet(settings) if settings.queue else None
        # Keys, safety, audit and cache first: a bad file fails before the model loads.
        self.admission = Admission.from_settings(settings, self.metrics, self.runner.off_loop)
        # Served-request records for feedback: in Redis too when --redis-url is set, so
        # feedback that reaches another replica finds its arm.
        self.experiments = ExperimentRuntime(
            self.presets.experiments, FeedbackStore(settings.redis_url), self.metrics
        )
        self.batcher: Batcher[Work, Made] = Batcher(
            self.runner.run_batch,
            key=lambda work: work.key(),
            units=lambda work: work.units,
            max_batch_size=settings.max_batch_size,
            max_delay=settings.max_delay_s,
            wait=settings.batch_wait,
            max_queue=settings.max_queue,
            on_batch=self._observe_batch,
            on_depth=self._depth_changed,
            on_running=self.metrics.running.set,
            run_at_step=self.runner.run_at_step,
        )
        # Async jobs: in Redis with --redis-url (any replica answers), else in memory.
        self.jobs: JobManager = build_job_manager(
            owner=os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}",
            redis_url=settings.redis_url,
            job_ttl=settings.job_ttl,
            job_max_bytes=settings.job_max_bytes,
            webhook_secret=settings.webhook_secret,
            webhook_allow_hosts=settings.webhook_allow_hosts,
            metrics=self.metrics,
            longest_job=settings.request_timeout,
            heartbeat=settings.job_heartbeat,
        )
        self.intake = Intake(settings, self.admission, self.presets, self.experiments, self.runner)
        self.dispatch = Dispatch(settings, self.batcher, self.experiments, self.fleet)
        self.async_jobs = AsyncJobs(
            self.batcher,
            self.admission,
            self.jobs,
            self.runner,
            settings.request_timeout,
            on_served=self._job_served,
            fleet=FleetJobs(self.fleet.front, self.jobs) if self.fleet is not None else None,
        )

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Load, warm up, start scheduling; then ready. Raises on a model that cannot
        load (the process exits and Kubernetes sees a failing pod)."""
        s = self.settings
        self.metrics.set_model(s.model, s.model_revision, s.release)
        loaded: dict[str, object] = {"role": s.role if s.queue else "alone"}
        if self.fleet is None or self.fleet.loads_model:
            engine = await self.runner.load(s)
            self.metrics.model_load_seconds.set(engine.info.load_seconds)
            loaded |= {"device": engine.info.device, "dtype": engine.info.dtype,
                       "load_seconds": round(engine.info.load_seconds, 3)}  # fmt: skip
        await self.jobs.start()
        self.batcher.start()
        if self.fleet is not None:
            await self.fleet.start_worker(self.runner, self.metrics)
        self.admission.loaded = True
        self.metrics.ready.set(1)
        loaded["torch_loaded"] = "torch" in sys.modules  # a front's stays False
        log.info("ready", extra={"model": s.model, "release": s.release, **loaded})

    async def drain(self, timeout: float) -> bool:
        """Stop accepting, finish accepted work (up to ``timeout`` s)."""
        self.admission.draining = True
        self.metrics.ready.set(0)
        drained = await self.batcher.drain(timeout)
        left = await self.async_jobs.finish(
            f"the server shut down before the job finished (--drain-timeout {timeout:g}s)",
            drained,
        )
        if left:
            log.warning("async jobs left unfinished at shutdown", extra={"jobs": left})
        return drained

    async def close(self) -> None:
        if self.fleet is not None:
            await self.fleet.close(self.settings.drain_timeout)
        await self.batcher.close()
        await self.jobs.close(min(self.settings.drain_timeout, 5.0))
        await self.admission.close()
        await self.experiments.feedback_store.close()
        self.runner.shutdown()

    # -- what the adapters read ----------------------------------------------------------

    def model_info(self) -> ModelInfo | None:
        """The model being served, while the server is ready (loaded and warm, not
        draining, the audit log writable); None otherwise."""
        engine = self.runner.engine
        return engine.info if engine is not None and self.admission.ready else None

    def ready_front(self) -> bool:
        """A queue front (``--role front``) that is ready: it serves without a model."""
        return self.admission.ready and self.runner.engine is None

    def vqa_token_limit(self) -> int:
        """The most answer tokens /vqa takes of the loaded model (the API's limit before)."""
        return answer_token_limit(self.runner.vqa_model)

    async def queue_status(self) -> dict[str, Any]:
        """``GET /queue``: the fleet's streams with ``--queue``, else this batcher's."""
        if self.fleet is not None:
            return await self.fleet.status()
        engine_loaded = self.runner.engine is not None
        return local_status(self.batcher, self.settings.track, engine_loaded)

    def list_presets(self) -> dict[str, StylePreset]:
        return dict(self.presets.get())

    def authenticate(self, ctx: CallContext) -> tuple[Principal | None, CallContext]:
        """See :meth:`Admission.authenticate`."""
        return self.admission.authenticate(ctx)

    def audit_refusal(self, ctx: CallContext, error: ServeError, status: int) -> None:
        """Record a request the API adapters answered with an error and the core has not
        recorded (a body that does not parse, a refused key): every request gets a line."""
        self.admission.refused(ctx, error, status)

    # -- requests ------------------------------------------------------------------------

    async def generate(
        self,
        params: GenerateParams,
        ctx: CallContext,
        progress: ProgressFn | None = None,
        preview: PreviewFn | None = None,
    ) -> GenerationResult:
        """Generate the images of one request; ``preview`` hears its live previews when
        it asked for them (``previews: true``)."""
        admission = self.admission
        async with admission.request(ctx) as trail, self.batcher.arrival() as arrival:
            prepared = await self.intake.generation(trail, params)
            work, request = prepared.work, prepared.work.request
            cached = await admission.lookup(prepared.cache_key)
            admission.accepted(trail, cache_hit=cached is not None)
            if cached is not None:
                if progress is not None:
                    progress(request.steps, request.steps)
                return await self.dispatch.answer(trail, cached, None, "generate")
            if progress is not None:
                work.progress, work.loop = progress, asyncio.get_running_loop()
            if work.previews and preview is not None:
                work.preview, work.loop = preview, asyncio.get_running_loop()
            made, info = await self.dispatch.run(work, trail, arrival)
            await admission.store(prepared.cache_key, made.images)
            return await self.dispatch.answer(trail, made.images, info, "generate")

    async def edit(self, edit: EditRequest, ctx: CallContext) -> GenerationResult:
        """Edit an uploaded image (img2img, inpaint, instruct)."""
        async with self.admission.request(ctx) as trail, self.batcher.arrival() as arrival:
            work = await self.intake.edit(trail, edit)
            self.admission.accepted(trail)
            made, info = await self.dispatch.run(work, trail, arrival)
            return await self.dispatch.answer(trail, made.images, info, "edit")

    async def vqa(self, *, image: bytes, question: str, max_tokens: int, ctx: CallContext) -> str:
        """Answer a question about an image."""
        asked = {"max_tokens": max_tokens}
        async with (
            self.admission.request(ctx, prompt=question, params=asked) as trail,
            self.batcher.arrival() as arrival,
        ):
            work = await self.intake.question(
                trail, image=image, question=question, max_tokens=max_tokens
            )
            self.admission.accepted(trail)
            made, _ = await self.dispatch.run(work, trail, arrival)
            return made.answer

    # -- async jobs ----------------------------------------------------------------------

    async def submit(
        self,
        params: GenerateParams,
        ctx: CallContext,
        webhook: str | None = None,
        webhook_events_filter: Sequence[str] | None = None,
    ) -> JobState:
        """Admit a generation like :meth:`generate`, then queue it as an async job and
        return the job without waiting (``Prefer: respond-async``, gRPC ``Submit``)."""
        async with self.admission.request(ctx) as trail:
            prepared = await self.intake.generation(trail, params)
            target, wanted = await self.jobs.check_webhook(webhook, webhook_events_filter)
            return await self.async_jobs.submit(
                trail,
                prepared.work,
                webhook=target,
                webhook_events_filter=wanted,
                cache_key=prepared.cache_key,
            )

    async def submit_edit(
        self,
        edit: EditRequest,
        ctx: CallContext,
        webhook: str | None = None,
        webhook_events_filter: Sequence[str] | None = None,
    ) -> JobState:
        """Admit an edit like :meth:`edit`, then queue it as an async job."""
        async with self.admission.request(ctx) as trail:
            work = await self.intake.edit(trail, edit)
            target, wanted = await self.jobs.check_webhook(webhook, webhook_events_filter)
            return await self.async_jobs.submit(
                trail, work, webhook=target, webhook_events_filter=wanted, cache_key=None
            )

    def job_reader(self, ctx: CallContext) -> OwnedJobs:
        """The jobs of a caller with a valid key: those its key's user submitted (reads
        and cancels answer while the model loads or the server drains: the jobs are in
        the store)."""
        principal, _ = self.admission.authenticate(ctx)
        return OwnedJobs(self.jobs, principal.user if principal is not None else None)

    # -- experiments ---------------------------------------------------------------------

    async def feedback(
        self, request_id: str, event: str, value: float, ctx: CallContext
    ) -> FeedbackOutcome:
        """Record an outcome against the arm ``request_id`` was served in (a key is
        needed where keys are)."""
        self.admission.authenticate(ctx)
        return await self.experiments.feedback(request_id, event, value)

    def list_experiments(self) -> ExperimentsCounts:
        """The experiments this replica serves, with its own counts."""
        return self.experiments.counts()

    # -- what the queue reports ----------------------------------------------------------

    def _depth_changed(self, depth: int) -> None:
        if self.fleet is None:  # with --queue the fleet's streams count
            self.metrics.set_depth(*self.batcher.waiting()[:2])
        self.async_jobs.queue_changed()

    def _observe_batch(self, info: BatchInfo) -> None:
        self.metrics.batch_size.observe(info.size)
        self.metrics.inference_duration.observe(info.run_s)

    async def _job_served(
        self, trail: Trail, images: list[GeneratedImage], info: BatchInfo | None
    ) -> None:
        """An async job that succeeded: counted in its arm and logged like a synchronous
        request."""
        await self.dispatch.answer(trail, images, info, job=True)
