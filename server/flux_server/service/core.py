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
from typing import Any

from flux_contract.presets import StylePreset
from flux_server.admission.auth import Principal
from flux_server.admission.cache import ResultCache
from flux_server.admission.gate import Admission, AuditSink, ContentPolicy, KeyChecker, Trail
from flux_server.admission.request_log import log_served
from flux_server.errors import InternalError, NotEnabled, ServeError
from flux_server.execution.engine import Engine
from flux_server.execution.protocols import ImageEditor, QuestionAnswerer
from flux_server.experiments.feedback import FeedbackStore
from flux_server.experiments.runtime import ExperimentEntryPoints, ExperimentRuntime
from flux_server.jobs.async_jobs import AsyncJobs, JobEntryPoints
from flux_server.jobs.fleet_jobs import FleetJobs
from flux_server.jobs.manager import JobManager, build_job_manager
from flux_server.metrics import Metrics
from flux_server.requests.context import CallContext, ProgressFn, new_request_id
from flux_server.requests.params import GenerateParams, ResolvedRequest, resolve
from flux_server.requests.presets_store import PresetStore
from flux_server.requests.results import GeneratedImage, GenerationResult
from flux_server.scheduling.batcher import Arrival, Batcher, BatchInfo
from flux_server.scheduling.runner import Question, Runner, Work, describe_failure
from flux_server.service.fleet import Fleet
from flux_server.settings import ServerSettings

__all__ = [
    "CallContext",
    "GenerationResult",
    "GenerationService",
    "ProgressFn",
    "new_request_id",
]

log = logging.getLogger(__name__)


class GenerationService(JobEntryPoints, ExperimentEntryPoints):
    """The server's core. ``start()`` loads the model (in the engine thread, so the
    probes answer meanwhile); ``ready`` turns true after the warm-up."""

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
            self.presets, FeedbackStore(settings.redis_url), self.metrics
        )
        # Results: a list of images per generation or edit, an answer per question.
        self.batcher: Batcher[Work, Any] = Batcher(
            self.runner.run_batch,
            key=Work.key,
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

    @property
    def ready(self) -> bool:
        return self.admission.ready

    @property
    def draining(self) -> bool:
        return self.admission.draining

    @property
    def engine(self) -> Engine | None:
        return self.runner.engine

    @property
    def editor(self) -> ImageEditor | None:
        return self.runner.editor

    @property
    def vqa_model(self) -> QuestionAnswerer | None:
        return self.runner.vqa_model

    @property
    def adapter_versions(self) -> dict[str, str]:
        return self.runner.adapter_versions

    @property
    def keys(self) -> KeyChecker | None:
        return self.admission.keys

    @property
    def safety(self) -> ContentPolicy:
        return self.admission.safety

    @property
    def audit(self) -> AuditSink | None:
        return self.admission.audit

    @property
    def cache(self) -> ResultCache | None:
        return self.admission.cache

    @property
    def model_name(self) -> str:
        return self.settings.model

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
        self, params: GenerateParams, ctx: CallContext, progress: ProgressFn | None = None
    ) -> GenerationResult:
        """Generate the images of one request."""
        admission = self.admission
        async with admission.request(ctx) as trail, self.batcher.arrival() as arrival:
            admission.admit(trail)
            job = trail.job = self._resolve(self._arm(trail, params))
            await admission.screen(trail, job.prompt, "prompt")
            key = admission.cache_key(
                job, seeded=params.seed is not None, adapter_versions=self.adapter_versions
            )
            cached = await admission.lookup(key)
            admission.accepted(trail, cache_hit=cached is not None)
            if cached is not None:
                if progress is not None:
                    progress(job.steps, job.steps)
                result = self._result(trail, cached, None, cache_hit=True)
                await self._served(trail, result, None)
                log_served(trail, result, None, "generate")
                return result
            loop = asyncio.get_running_loop() if progress else None
            work = Work("generate", job, job.output_format, trail.ctx.request_id, progress, loop)
            images, info = await self._submit(work, trail.ctx, arrival, trail.user)
            await admission.store(key, images)
            result = self._result(trail, images, info)
            await self._served(trail, result, info)
            log_served(trail, result, info, "generate")
            return result

    async def edit(
        self,
        *,
        image: bytes,
        mask: bytes | None,
        mode: str | None,
        strength: float | None,
        params: GenerateParams,
        ctx: CallContext,
    ) -> GenerationResult:
        """Edit an uploaded image (img2img, inpaint, instruct)."""
        admission = self.admission
        async with admission.request(ctx) as trail, self.batcher.arrival() as arrival:
            admission.admit(trail)
            work = await self._edit_work(trail, image, mask, mode, strength, params)
            admission.accepted(trail)
            images, info = await self._submit(work, trail.ctx, arrival)
            result = self._result(trail, images, info)
            await self._served(trail, result, info)
            log_served(trail, result, info, "edit")
            return result

    async def _edit_work(
        self,
        trail: Trail,
        image: bytes,
        mask: bytes | None,
        mode: str | None,
        strength: float | None,
        params: GenerateParams,
    ) -> Work:
        """Decode, resolve, screen and validate an edit: the work to queue."""
        from flux_server.requests.edit_inputs import decode_edit_inputs, sized_for
        from flux_server.requests.edits import edit_job_from, validate

        editor = self.editor
        if editor is None:
            raise NotEnabled("editing is off: start the server with --enable-editing", "mode")
        s = self.settings
        source, mask_image = await decode_edit_inputs(
            self.runner.off_loop, image, mask, s.max_image_pixels
        )
        sized = sized_for(params, source.size, s.max_side)
        job = trail.job = self._resolve(self._arm(trail, sized))
        await self.admission.screen(trail, job.prompt, "prompt")
        edit_job = edit_job_from(
            job,
            image=source,
            mask=mask_image,
            mode=mode,
            strength=strength,
            width=params.width,
            height=params.height,
        )
        validate(edit_job, kontext_available=editor.can_instruct)
        return Work("edit", edit_job, job.output_format, trail.ctx.request_id)

    async def vqa(self, *, image: bytes, question: str, max_tokens: int, ctx: CallContext) -> str:
        """Answer a question about an image."""
        from flux_server.requests.images import decode_image
        from flux_server.requests.questions import validate_question

        admission = self.admission
        asked = {"max_tokens": max_tokens}
        async with (
            admission.request(ctx, prompt=question, params=asked) as trail,
            self.batcher.arrival() as arrival,
        ):
            admission.admit(trail)
            if self.vqa_model is None:
                raise NotEnabled("VQA is off: start the server with --vqa-model", "question")
            validate_question(question, max_tokens, self.vqa_model)
            decoded = await self.runner.off_loop(
                decode_image, image, "image", self.settings.max_image_pixels
            )
            await admission.screen(trail, question, "question")
            admission.accepted(trail)
            work = Work("vqa", Question(decoded, question, max_tokens), "", trail.ctx.request_id)
            answer, _ = await self._submit(work, trail.ctx, arrival)
            return str(answer)

    # -- steps ---------------------------------------------------------------------------

    def _resolve(self, params: GenerateParams) -> ResolvedRequest:
        """The request with its preset, the server's defaults and limits applied."""
        runner = self.runner
        return resolve(
            params,
            self.presets.get(),
            self.settings,
            runner.adapter_defaults,
            adapters_per_request=runner.adapters_per_request,
        )

    async def _submit(
        self, work: Work, ctx: CallContext, arrival: Arrival, user: str | None = None
    ) -> tuple[Any, BatchInfo]:
        timeout = ctx.timeout if ctx.timeout is not None else self.settings.request_timeout
        if self.fleet is not None and isinstance(work.job, ResolvedRequest):
            arrival.end()  # batching happens at the workers
            return await self.fleet.front.generate(
                work.job,
                request_id=ctx.request_id,
                key_id=user or "anonymous",
                priority=ctx.priority,
                timeout=timeout,
                progress=work.progress,
            )
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

    def _depth_changed(self, depth: int) -> None:
        if getattr(self, "fleet", None) is None:  # with --queue the fleet's streams count
            self.metrics.set_depth(*self.batcher.waiting()[:2])
        async_jobs: AsyncJobs | None = getattr(self, "async_jobs", None)
        if async_jobs is not None:
            async_jobs.queue_changed()

    def _observe_batch(self, info: BatchInfo) -> None:
        self.metrics.batch_size.observe(info.size)
        self.metrics.inference_duration.observe(info.run_s)

    def _result(
        self,
        trail: Trail,
        images: list[GeneratedImage],
        info: BatchInfo | None,
        cache_hit: bool = False,
    ) -> GenerationResult:
        """What a served request answers; ``info`` is None when nothing ran (a cache hit:
        no batch, no wait; a question: batch of one, timings not reported)."""
        return GenerationResult(
            images=images,
            request_id=trail.ctx.request_id,
            release=self.settings.release,
            model=self.settings.model,
            batch_size=info.size if info is not None else (0 if cache_hit else 1),
            queue_ms=info.queue_s * 1000 if info is not None else 0.0,
            inference_ms=info.run_s * 1000 if info is not None else 0.0,
            total_ms=trail.elapsed_ms,
            cache_hit=cache_hit,
            experiment=trail.experiment,
        )
