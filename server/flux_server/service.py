"""The transport-free core: what a generation, an edit or a question goes through
between an API adapter (REST or gRPC) and the engine.

authenticate → resolve (preset, defaults, limits) → safety → cache → batcher → engine,
with the audit log, metrics and structured logs along the way. The adapters only
convert to and from their wire types and map :mod:`flux_server.errors` to statuses.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

from flux_client.presets import StylePreset
from flux_server.batcher import Batcher, BatchInfo
from flux_server.engine import Engine, GeneratedImage, encode
from flux_server.errors import (
    ContentRejected,
    InternalError,
    NotEnabled,
    PermissionDenied,
    ServeError,
    Unauthenticated,
    Unavailable,
    status_of,
)
from flux_server.metrics import Metrics
from flux_server.params import GenerateParams, Job, resolve
from flux_server.presets_store import PresetStore
from flux_server.settings import ServerSettings

_T = TypeVar("_T")

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]


def new_request_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class CallContext:
    """Who asks, through which endpoint, with which deadline and lane."""

    endpoint: str  # "rest:/generate", "grpc:Generate", ...
    request_id: str = field(default_factory=new_request_id)
    authorization: str | None = None  # the "authorization" header / metadata value
    priority: bool = False
    timeout: float | None = None  # seconds; None: --request-timeout
    priority_denied: bool = False  # asked for the priority lane without the permission


@dataclass
class GenerationResult:
    images: list[GeneratedImage]
    request_id: str
    release: str
    model: str
    batch_size: int
    queue_ms: float
    inference_ms: float
    total_ms: float
    cache_hit: bool = False


@dataclass(eq=False)
class _Work:
    """One request in the scheduler: a generation, an edit or a question. All three
    share one queue (one accelerator): the same backpressure, lane and deadlines."""

    kind: Literal["generate", "edit", "vqa"]
    job: Any  # params.Job, editing.EditJob, or _Question
    output_format: str
    request_id: str
    progress: ProgressFn | None = None
    loop: asyncio.AbstractEventLoop | None = None

    def key(self) -> tuple[Any, ...]:
        if self.kind == "generate":
            return ("generate", *self.job.batch_key())
        if self.kind == "vqa":
            return ("vqa", id(self))  # answered one at a time
        from flux_server import editing

        return ("edit", *editing.batch_key(self.job))

    @property
    def units(self) -> int:
        return 1 if self.kind == "vqa" else int(self.job.num_images)


@dataclass(frozen=True)
class _Question:
    image: Any  # PIL image
    question: str
    max_tokens: int


class GenerationService:
    """The server's core. ``start()`` loads the model (in the engine thread, so the
    probes answer meanwhile); ``ready`` turns true after the warm-up."""

    def __init__(self, settings: ServerSettings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics(settings.release)
        self.presets = PresetStore(settings.presets_dir)
        self.engine: Engine | None = None
        self.editor: Any = None
        self.vqa_model: Any = None
        self.ready = False
        self.draining = False
        # One thread owns the accelerator: torch calls never overlap.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        self._aux_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aux")
        # Results: a list of images per generation or edit, an answer per question.
        self.batcher: Batcher[_Work, Any] = Batcher(
            self._run_batch,
            key=_Work.key,
            units=lambda work: work.units,
            max_batch_size=settings.max_batch_size,
            max_delay=settings.max_delay_s,
            wait=settings.batch_wait,
            max_queue=settings.max_queue,
            on_batch=self._observe_batch,
            on_depth=self.metrics.queue_depth.set,
            on_running=self.metrics.running.set,
        )
        self.keys: Any = None
        self.safety: Any = None
        self.audit: Any = None
        self.cache: Any = None
        self.adapter_defaults: dict[str, float] = {}  # loaded LoRA adapters: default scales
        # A digest of each adapter's weights: part of the cache key, so new weights under
        # an old name never serve images made with the old ones (Redis outlives pods).
        self.adapter_versions: dict[str, str] = {}
        self._build_features()

    # -- lifecycle -----------------------------------------------------------------------

    def _build_features(self) -> None:
        """The optional modules the settings switch on; a bad file fails start-up."""
        s = self.settings
        if s.api_keys is not None:
            from flux_server.auth import KeyStore

            self.keys = KeyStore.from_file(s.api_keys)
        else:
            log.warning(
                "no --api-keys: the server is open, every caller may generate and use the "
                "priority lane"
            )
        if s.lora:
            from flux_server.lora import parse_lora_flags

            # A bad --lora fails here, before minutes of loading the model.
            for spec in parse_lora_flags(s.lora):
                if not Path(spec.path).exists():
                    raise ValueError(f"--lora {spec.name}: {spec.path} does not exist")
        from flux_server.safety import SafetyFilter

        # The default blocklist is always on; --blocklist extends it.
        self.safety = SafetyFilter.from_files(
            s.blocklist, s.safety_model, threshold=s.safety_threshold
        )
        if s.audit_log is not None:
            from flux_server.audit import AuditLog

            self.audit = AuditLog(s.audit_log, hash_prompts=s.audit_hash_prompts)
        from flux_server.cache import build_cache

        self.cache = build_cache(
            redis_url=s.redis_url,
            cache_bytes=s.cache_bytes,
            ttl=s.cache_ttl,
            on_error=lambda _exc: self.metrics.cache_errors.inc(),
        )

    async def start(self) -> None:
        """Load, warm up, start scheduling; then ready. Raises on a model that cannot
        load (the process exits and Kubernetes sees a failing pod)."""
        loop = asyncio.get_running_loop()
        s = self.settings
        self.metrics.set_model(s.model, s.model_revision, s.release)
        self.engine = await loop.run_in_executor(
            self._executor,
            lambda: Engine.load(s.model, s.model_revision, s.device, s.dtype, settings=s),
        )
        self.metrics.model_load_seconds.set(self.engine.info.load_seconds)
        await loop.run_in_executor(self._executor, self._load_extras)
        if s.warmup:
            await loop.run_in_executor(self._executor, self.engine.warmup)
        self.batcher.start()
        self.ready = True
        self.metrics.ready.set(1)
        log.info(
            "ready",
            extra={
                "model": s.model,
                "release": s.release,
                "device": self.engine.info.device,
                "dtype": self.engine.info.dtype,
                "load_seconds": round(self.engine.info.load_seconds, 3),
            },
        )

    def _load_extras(self) -> None:
        """LoRA adapters, editing pipelines, the VQA model (engine thread)."""
        assert self.engine is not None
        s = self.settings
        if s.lora:
            from flux_server import lora

            specs = lora.parse_lora_flags(s.lora)
            loaded = lora.load_adapters(self.engine.pipe, specs)
            self.engine.adapter_hook = lora.activate
            self.adapter_defaults = {name: spec.scale for name, spec in loaded.items()}
            self.adapter_versions = {name: lora.fingerprint(spec) for name, spec in loaded.items()}
        if s.enable_editing or s.kontext_model:
            from flux_server.editing import Editor

            self.editor = Editor(
                self.engine.pipe, s.kontext_model, set_adapters=self.engine.set_adapters
            )
        if s.vqa_model:
            from flux_server.vqa import VqaModel

            self.vqa_model = VqaModel.load(s.vqa_model, self.engine.info.device)

    async def drain(self, timeout: float) -> bool:
        """Stop accepting, finish accepted work (up to ``timeout`` s)."""
        self.ready = False
        self.draining = True
        self.metrics.ready.set(0)
        drained = await self.batcher.drain(timeout)
        return drained

    async def close(self) -> None:
        await self.batcher.close()
        if self.cache is not None:
            await self.cache.close()
        if self.audit is not None:
            self.audit.close()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._aux_executor.shutdown(wait=False, cancel_futures=True)

    @property
    def model_name(self) -> str:
        return self.settings.model

    def list_presets(self) -> dict[str, StylePreset]:
        return dict(self.presets.get())

    # -- requests ------------------------------------------------------------------------

    def authenticate(self, ctx: CallContext) -> tuple[Any, CallContext]:
        """The caller's principal (None on an open server) and the context to serve the
        request with: a caller whose key lacks the ``priority`` permission is served in
        the normal lane, and the downgrade is logged (server log and audit log)."""
        if self.keys is None:
            return None, ctx
        from flux_server.auth import bearer_token

        self.keys.reload_if_changed()
        token = bearer_token(ctx.authorization)
        if token is None:
            raise Unauthenticated(
                "an API key is required: send 'authorization: Bearer <key>'", "authorization"
            )
        principal = self.keys.authenticate(token)
        if principal is None:
            raise Unauthenticated("the API key is not valid", "authorization")
        if ctx.priority and not principal.can_priority:
            log.warning(
                "priority lane denied: the key has no priority permission; "
                "served in the normal lane",
                extra={"request_id": ctx.request_id, "user": principal.user},
            )
            ctx = replace(ctx, priority=False, priority_denied=True)
        return principal, ctx

    def _check_ready(self) -> None:
        if self.draining:
            raise Unavailable("the server is draining; retry on another replica")
        if not self.ready:
            raise Unavailable("the model is still loading; retry shortly")

    async def generate(
        self, params: GenerateParams, ctx: CallContext, progress: ProgressFn | None = None
    ) -> GenerationResult:
        """Generate the images of one request."""
        trail = _Trail(ctx)
        try:
            return await self._generate(params, trail, progress)
        except ServeError as error:
            # Refused, timed out, shed or failed: the audit log has a line for it too.
            self._audit_error(trail.ctx, error, trail.user, trail.job)
            raise

    async def _generate(
        self, params: GenerateParams, trail: _Trail, progress: ProgressFn | None
    ) -> GenerationResult:
        started = time.perf_counter()
        self._check_ready()
        principal, ctx = self.authenticate(trail.ctx)
        user = principal.user if principal is not None else None
        trail.ctx, trail.user = ctx, user
        job = resolve(params, self.presets.get(), self.settings, self.adapter_defaults)
        trail.job = job
        await self._check_safety(job.prompt, ctx, user, job)

        key = self._cache_key(job, seeded=params.seed is not None)
        if key is not None:
            cached = await self.cache.get(key)
            if cached is not None:
                self.metrics.cache_hits.inc()
                images = _images_from_blob(cached)
                if progress is not None:
                    progress(job.steps, job.steps)
                result = self._result(ctx, images, 0, 0.0, 0.0, started, cache_hit=True)
                self._audit(ctx, user, job, "accepted", None, 200, result)
                return result
            self.metrics.cache_misses.inc()

        work = _Work(
            "generate",
            job,
            job.output_format,
            ctx.request_id,
            progress,
            asyncio.get_running_loop() if progress else None,
        )
        images, info = await self._submit(work, ctx)
        if key is not None:
            await self.cache.set(key, _images_to_blob(images))
        result = self._result(
            ctx, images, info.size, info.queue_s * 1000, info.run_s * 1000, started
        )
        self._audit(ctx, user, job, "accepted", None, 200, result)
        log.info(
            "generated",
            extra={
                "request_id": ctx.request_id,
                "endpoint": ctx.endpoint,
                "user": user,
                "size": [job.width, job.height],
                "steps": job.steps,
                "images": job.num_images,
                "batch_size": info.size,
                "queue_ms": round(result.queue_ms, 1),
                "total_ms": round(result.total_ms, 1),
            },
        )
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
        trail = _Trail(ctx)
        try:
            return await self._edit(image, mask, mode, strength, params, trail)
        except ServeError as error:
            self._audit_error(trail.ctx, error, trail.user, trail.job)
            raise

    async def _edit(
        self,
        image: bytes,
        mask: bytes | None,
        mode: str | None,
        strength: float | None,
        params: GenerateParams,
        trail: _Trail,
    ) -> GenerationResult:
        started = time.perf_counter()
        self._check_ready()
        if self.editor is None:
            raise NotEnabled("editing is off: start the server with --enable-editing", "mode")
        principal, ctx = self.authenticate(trail.ctx)
        user = principal.user if principal is not None else None
        trail.ctx, trail.user = ctx, user
        from flux_server.editing import edit_job_from, validate, working_size
        from flux_server.images import decode_image

        max_pixels = self.settings.max_image_pixels
        source = await self._off_loop(decode_image, image, "image", max_pixels)
        mask_image = (
            None
            if mask is None
            else await self._off_loop(decode_image, mask, "mask", max_pixels, mode="L")
        )
        # Limits and defaults apply at the size the pipeline runs (the source's, snapped
        # to 16 pixels and scaled to fit --max-side, unless the request sets one); the
        # result keeps the source's size.
        auto_width, auto_height = working_size(source.size, self.settings.max_side)
        sized = params.model_copy(
            update={"width": params.width or auto_width, "height": params.height or auto_height}
        )
        job = resolve(sized, self.presets.get(), self.settings, self.adapter_defaults)
        trail.job = job
        await self._check_safety(job.prompt, ctx, user, job)
        edit_job = edit_job_from(
            job,
            image=source,
            mask=mask_image,
            mode=mode,
            strength=strength,
            width=params.width,
            height=params.height,
        )
        validate(edit_job, kontext_available=self.editor.can_instruct)
        work = _Work("edit", edit_job, job.output_format, ctx.request_id)
        images, info = await self._submit(work, ctx)
        result = self._result(
            ctx, images, info.size, info.queue_s * 1000, info.run_s * 1000, started
        )
        self._audit(ctx, user, job, "accepted", None, 200, result)
        return result

    async def vqa(self, *, image: bytes, question: str, max_tokens: int, ctx: CallContext) -> str:
        """Answer a question about an image."""
        trail = _Trail(ctx)
        try:
            return await self._vqa(image, question, max_tokens, trail)
        except ServeError as error:
            asked = {"max_tokens": max_tokens}
            self._audit_error(trail.ctx, error, trail.user, prompt=question, params=asked)
            raise

    async def _vqa(self, image: bytes, question: str, max_tokens: int, trail: _Trail) -> str:
        started = time.perf_counter()
        self._check_ready()
        if self.vqa_model is None:
            raise NotEnabled("VQA is off: start the server with --vqa-model", "question")
        principal, ctx = self.authenticate(trail.ctx)
        user = principal.user if principal is not None else None
        trail.ctx, trail.user = ctx, user
        from flux_server.images import decode_image
        from flux_server.vqa import validate_question

        validate_question(question, max_tokens)
        decoded = await self._off_loop(decode_image, image, "image", self.settings.max_image_pixels)
        asked: dict[str, Any] = {"prompt": question, "params": {"max_tokens": max_tokens}}
        decision = await self._safety_decision(question)
        if not decision.allowed:
            reason = decision.reason or "unknown"
            self.metrics.safety_rejections.labels(reason=reason).inc()
            self._audit(
                ctx, user, None, "rejected", reason, 400, None, detail=decision.matched, **asked
            )
            error = ContentRejected(
                f"the question was refused by the content policy ({reason})", "question"
            )
            error.audited = True
            raise error
        work = _Work("vqa", _Question(decoded, question, max_tokens), "", ctx.request_id)
        answer, _ = await self._submit(work, ctx)
        if self.audit is not None:
            result = self._result(ctx, [], 1, 0.0, 0.0, started)
            self._audit(ctx, user, None, "accepted", None, 200, result, **asked)
        return str(answer)

    # -- steps ---------------------------------------------------------------------------

    async def _off_loop(self, func: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        # Decoding an upload at the pixel cap takes a few hundred milliseconds: long
        # enough to stall every other request if it ran on the event loop.
        call = functools.partial(func, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._aux_executor, call)

    async def _safety_decision(self, text: str) -> Any:
        # The blocklist is microseconds; a classifier model is not, so it leaves the loop.
        if getattr(self.safety, "classifier", None) is not None:
            return await self._off_loop(self.safety.check, text)
        return self.safety.check(text)

    async def _check_safety(
        self, prompt: str, ctx: CallContext, user: str | None, job: Job
    ) -> None:
        if self.safety is None:
            return
        decision = await self._safety_decision(prompt)
        if decision.allowed:
            return
        reason = decision.reason or "unknown"
        self.metrics.safety_rejections.labels(reason=reason).inc()
        self._audit(ctx, user, job, "rejected", reason, 400, None, detail=decision.matched)
        log.warning(
            "prompt rejected",
            extra={"request_id": ctx.request_id, "user": user, "reason": reason},
        )
        error = ContentRejected(
            f"the prompt was refused by the content policy ({reason})", "prompt"
        )
        error.audited = True
        raise error

    def _cache_key(self, job: Job, *, seeded: bool) -> str | None:
        if self.cache is None:
            return None
        from flux_server.cache import cache_key

        s = self.settings
        return cache_key(
            job,
            model=s.model,
            revision=s.model_revision,
            release=s.release,
            adapters=dict(job.adapters),
            seeded=seeded,
            adapter_versions=self.adapter_versions,
        )

    async def _submit(self, work: _Work, ctx: CallContext) -> tuple[Any, BatchInfo]:
        timeout = ctx.timeout if ctx.timeout is not None else self.settings.request_timeout
        try:
            return await self.batcher.submit(work, priority=ctx.priority, timeout=timeout)
        except ServeError:
            raise
        except Exception as exc:
            log.exception(
                "generation failed", extra={"request_id": ctx.request_id, "error": repr(exc)}
            )
            raise InternalError(_describe_failure(exc, work)) from None

    async def _run_batch(self, works: Sequence[_Work]) -> list[Any]:
        loop = asyncio.get_running_loop()
        listeners = [w for w in works if w.progress is not None and w.loop is not None]

        def progress(step: int, total: int) -> None:
            for work in listeners:
                work.loop.call_soon_threadsafe(work.progress, step, total)  # type: ignore[union-attr,arg-type]

        on_step = progress if listeners else None
        if works[0].kind == "vqa":
            question = works[0].job
            answer = await loop.run_in_executor(
                self._executor,
                self.vqa_model.answer,
                question.image,
                question.question,
                question.max_tokens,
            )
            return [answer]
        if works[0].kind == "generate":
            engine = self.engine
            assert engine is not None
            jobs = [w.job for w in works]
            generated = await loop.run_in_executor(self._executor, engine.generate, jobs, on_step)
            self.metrics.images_generated.inc(sum(len(images) for images in generated))
            return generated

        def run_edits() -> list[list[GeneratedImage]]:
            results = self.editor.run_batch([w.job for w in works], on_step)
            return [
                [
                    GeneratedImage(
                        data=encode(image, work.output_format),
                        format=work.output_format,
                        width=image.width,
                        height=image.height,
                        seed=seed,
                    )
                    for image, seed in zip(result.images, result.seeds, strict=True)
                ]
                for work, result in zip(works, results, strict=True)
            ]

        edited = await loop.run_in_executor(self._executor, run_edits)
        self.metrics.images_generated.inc(sum(len(images) for images in edited))
        return edited

    def _observe_batch(self, info: BatchInfo) -> None:
        self.metrics.batch_size.observe(info.size)
        self.metrics.inference_duration.observe(info.run_s)

    def _result(
        self,
        ctx: CallContext,
        images: list[GeneratedImage],
        batch_size: int,
        queue_ms: float,
        inference_ms: float,
        started: float,
        cache_hit: bool = False,
    ) -> GenerationResult:
        return GenerationResult(
            images=images,
            request_id=ctx.request_id,
            release=self.settings.release,
            model=self.settings.model,
            batch_size=batch_size,
            queue_ms=queue_ms,
            inference_ms=inference_ms,
            total_ms=(time.perf_counter() - started) * 1000,
            cache_hit=cache_hit,
        )

    def _audit(
        self,
        ctx: CallContext,
        user: str | None,
        job: Job | None,
        decision: Literal["accepted", "rejected"],
        reason: str | None,
        status: int,
        result: GenerationResult | None,
        detail: str | None = None,
        prompt: str | None = None,
        params: dict[str, Any] | None = None,
    ) -> None:
        """One audit line. ``prompt`` and ``params`` describe a request without a
        generation job (a question)."""
        if self.audit is None:
            return
        from flux_server.audit import AuditRecord

        params = {**(params or {}), "priority": ctx.priority}
        if job is not None:
            params = {
                "width": job.width,
                "height": job.height,
                "steps": job.steps,
                "guidance_scale": job.guidance_scale,
                "true_cfg_scale": job.true_cfg_scale,
                "seed": job.seed,
                "num_images": job.num_images,
                "style_preset": job.style_preset,
                "adapters": dict(job.adapters),
                **params,
            }
        self.audit.record(
            AuditRecord(
                request_id=ctx.request_id,
                user=user,
                endpoint=ctx.endpoint,
                prompt=job.prompt if job is not None else prompt,
                negative_prompt=job.negative_prompt if job is not None else None,
                params=params,
                decision=decision,
                reason=reason or ("priority_denied" if ctx.priority_denied else None),
                detail=detail,
                status=status,
                latency_ms=result.total_ms if result is not None else None,
                cache_hit=result.cache_hit if result is not None else False,
            )
        )

    def _audit_error(
        self,
        ctx: CallContext,
        error: ServeError,
        user: str | None = None,
        job: Job | None = None,
        status: int | None = None,
        prompt: str | None = None,
        params: dict[str, Any] | None = None,
    ) -> None:
        """One line for a request that ended in an error, unless it has one already (a
        refused prompt is recorded where it is refused, with what matched)."""
        if self.audit is None or error.audited:
            return
        reason = {Unauthenticated: "unauthenticated", PermissionDenied: "priority_denied"}.get(
            type(error), error.code
        )
        status = status if status is not None else status_of(error).http
        self._audit(
            ctx,
            user,
            job,
            "rejected",
            reason,
            status,
            None,
            detail=error.message,
            prompt=prompt,
            params=params,
        )
        error.audited = True

    def audit_refusal(self, ctx: CallContext, error: ServeError, status: int) -> None:
        """Record a request the API adapters answered with an error and the core has not
        recorded (a body that does not parse, a refused key): every request gets a line."""
        self._audit_error(ctx, error, status=status)


@dataclass
class _Trail:
    """What is known of a request so far, for its audit line if it fails."""

    ctx: CallContext
    user: str | None = None
    job: Job | None = None


def _describe_failure(exc: BaseException, work: _Work) -> str:
    job = work.job
    size = f"{getattr(job, 'width', '?')}x{getattr(job, 'height', '?')}"
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return (
            f"the accelerator ran out of memory for this request ({size}, "
            f"{job.num_images} image(s)); try a smaller size or fewer images"
        )
    return f"generation failed ({type(exc).__name__}); the request id is in the server's logs"


def _images_to_blob(images: list[GeneratedImage]) -> bytes:
    return json.dumps(
        [
            {
                "b64": base64.b64encode(i.data).decode("ascii"),
                "format": i.format,
                "width": i.width,
                "height": i.height,
                "seed": i.seed,
            }
            for i in images
        ]
    ).encode("utf-8")


def _images_from_blob(blob: bytes) -> list[GeneratedImage]:
    return [
        GeneratedImage(
            data=base64.b64decode(entry["b64"]),
            format=entry["format"],
            width=entry["width"],
            height=entry["height"],
            seed=entry["seed"],
        )
        for entry in json.loads(blob)
    ]
