"""What runs on the accelerator: the loaded models, the one thread that calls them, and
a batch of queued work (:mod:`flux_server.scheduling.work`) turned into results: the
requests translated into the engine's plain inputs, its pictures encoded. Torch calls
never overlap: every model call goes through the single engine thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from flux_server.errors import ContentRejected, image_refused
from flux_server.execution.cancellation import (
    BatchCancellation,
    GenerationInterrupted,
)
from flux_server.execution.engine import Engine, choose_device
from flux_server.execution.inputs import InputRejected, Picture, ProgressFn, StopFn
from flux_server.execution.previews import (
    Decoder,
    PreviewFn,
    PreviewHook,
    PreviewImage,
    build_decoder,
)
from flux_server.execution.protocols import ImageEditor, QuestionAnswerer
from flux_server.execution.startup import StartupPhases
from flux_server.execution.step_hooks import StepHook
from flux_server.execution.step_priority import NotTaken, StepBreak
from flux_server.metrics import Metrics
from flux_server.requests.edits import request_error
from flux_server.requests.params import AdapterSlot
from flux_server.requests.results import GeneratedImage
from flux_server.scheduling.work import Edit, Generation, Made, Question, Work, members
from flux_server.settings import ServerSettings

if TYPE_CHECKING:
    from flux_server.execution.image_safety import ImageSafetyClassifier

_T = TypeVar("_T")

Served = Made | ContentRejected
"""A generation's or edit's outcome: its images, or its refusal by the image safety model."""

log = logging.getLogger(__name__)


class Runner:
    """The loaded models and the thread that runs them. ``load()`` fills them in."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.engine: Engine | None = None
        self.editor: ImageEditor | None = None
        self.vqa_model: QuestionAnswerer | None = None
        # --image-safety-model: every image made is checked before it leaves (engine thread).
        self.image_safety: ImageSafetyClassifier | None = None
        self.adapter_defaults: dict[str, float] = {}  # loaded LoRA adapters: default scales
        # With a compiled transformer, the one hot-swap slot a combination of adapters is
        # fused into (their ranks must fit it); None: any combination.
        self.adapter_slot: AdapterSlot | None = None
        # A digest of each adapter's weights: part of the cache key, so new weights under
        # an old name never serve images made with the old ones (Redis outlives pods).
        self.adapter_versions: dict[str, str] = {}
        # --preview-decoder, built once the pipeline is loaded; --preview-every.
        self.preview_decoder: Decoder | None = None
        self.preview_every = 4
        self._adapters: list[Any] = []  # the --lora specs, each path local and verified
        # The denoising step the running call last finished (written by the engine
        # thread, read on the loop): how far a cancelled call got after its cancel.
        self.step = 0
        # This process's start, phase by phase (fluxserve_startup_seconds).
        self.startup = StartupPhases(
            lambda phase, seconds: metrics.startup_seconds.labels(phase=phase).set(seconds)
        )
        # Priority at the step (--priority-at-step): generations offered while a call
        # runs are served at its next step boundary, the call paused.
        self.priority_at_step = True
        self.step_break = StepBreak()
        # One thread owns the accelerator: torch calls never overlap.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        # Decoding uploads and a safety classifier run beside it, off the event loop.
        self._aux_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aux")

    async def load(self, settings: ServerSettings) -> Engine:
        """The pipeline, then adapters, editing and VQA, then the compile cache and the
        warm-up (engine thread); each start phase timed into ``self.startup``."""
        loop = asyncio.get_running_loop()
        s = settings
        device = choose_device(s.device)
        speed = s.speed_options(device)
        if s.lora:
            # Fetched and verified before the model: a wrong adapter fails in seconds.
            # Its fetch counts in the download phase (the phase is reported after the
            # model's own download).
            with self.startup.timed("download"):
                self._adapters = await loop.run_in_executor(self._executor, _adapter_specs, s)
        engine = await loop.run_in_executor(
            self._executor,
            lambda: Engine.load(
                s.model, s.model_revision, device, s.dtype, speed, with_adapters=bool(s.lora),
                phases=self.startup,
            ),
        )  # fmt: skip
        self.engine = engine
        phases = self.startup
        with phases.timed("load"):
            await loop.run_in_executor(self._executor, self._load_extras, s)
        phases.done("load", device=engine.info.device, dtype=engine.info.dtype)
        from flux_server.execution import compile_cache

        with phases.timed("compile"):  # before the first compiled call
            cache = await loop.run_in_executor(
                self._executor, compile_cache.open_and_load, s.compile_cache, engine
            )
        if s.warmup:
            await loop.run_in_executor(self._executor, engine.warmup, phases)
        if cache is not None:
            with phases.timed("compile"):
                await loop.run_in_executor(self._executor, cache.save)
        phases.done("compile", mode=speed.compile, cache=cache.outcome if cache else None)
        phases.done("warmup", warmed_up=s.warmup)
        return engine

    def _load_extras(self, s: ServerSettings) -> None:
        assert self.engine is not None
        self.preview_decoder = build_decoder(
            s.preview_decoder, self.engine.pipe, s.preview_taef1, self.engine.info.device
        )
        self.preview_every = s.preview_every
        if s.lora:
            from flux_server.execution import lora, lora_hotswap

            loaded = lora.load_adapters(self.engine.pipe, self._adapters)
            self.engine.adapter_hook = lora.activate
            self.adapter_defaults = {name: spec.scale for name, spec in loaded.items()}
            self.adapter_versions = {name: lora.fingerprint(spec) for name, spec in loaded.items()}
            hot = lora_hotswap.attached(self.engine.pipe)
            if hot is not None:  # compiled: a combination must fit the one slot
                self.adapter_slot = AdapterSlot(dict(hot.ranks), hot.slot_rank)
        if s.enable_editing or s.kontext_model:
            from flux_server.execution.editor import Editor

            self.editor = Editor(
                self.engine.pipe, s.kontext_model, set_adapters=self.engine.set_adapters
            )
        if s.vqa_model:
            from flux_server.execution.vqa import VqaModel

            self.vqa_model = VqaModel.load(s.vqa_model, self.engine.info.device)
        if s.image_safety_model:
            from flux_server.execution.image_safety import ImageSafetyClassifier

            self.image_safety = ImageSafetyClassifier(
                s.image_safety_model, s.image_safety_threshold, self.engine.info.device
            )

    async def off_loop(self, func: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Run ``func`` in the auxiliary thread: decoding an upload at the pixel cap takes
        a few hundred milliseconds, long enough to stall every other request."""
        call = functools.partial(func, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._aux_executor, call)

    async def run_batch(self, works: Sequence[Work]) -> list[Served]:
        """One result per work, in order: images per generation or edit, an answer per
        question (the batcher's ``RunBatch``)."""
        for work in works:
            if work.on_start is not None:
                await work.on_start()
        if works[0].kind == "vqa":
            try:
                return [await self._answer(question) for question in members(works, Question)]
            except InputRejected as rejected:
                raise request_error(rejected) from None
        listeners = [w for w in works if w.progress is not None and w.loop is not None]
        self.step = 0

        def on_step(step: int, total: int) -> None:
            self.step = step
            for work in listeners:
                work.loop.call_soon_threadsafe(work.progress, step, total)  # type: ignore[union-attr,arg-type]

        run = self._generate if works[0].kind == "generate" else self._edit
        cancellation = BatchCancellation([w.token for w in works])
        # Open from here, not from the engine thread: priority work offered before the
        # call's first step waits for it instead of for the whole call.
        at_step = self.step_break.open() if run == self._generate and self.breaks_steps else None
        try:
            with at_step or contextlib.nullcontext():
                made = await asyncio.get_running_loop().run_in_executor(
                    self._executor, run, works, on_step, cancellation.should_stop
                )
        except GenerationInterrupted as stopped:
            # Every member was cancelled (their outcome is recorded already): no
            # images, and no split-and-retry of a batch that failed.
            log.info(
                "generation interrupted",
                extra={
                    "kind": works[0].kind,
                    "step": stopped.step,
                    "total": stopped.total,
                    "request_ids": [w.request_id for w in works],
                },
            )
            return [Made() for _ in works]
        except InputRejected as rejected:
            raise request_error(rejected) from None
        self.metrics.images_generated.inc(sum(len(m.images) for m in made if isinstance(m, Made)))
        return made

    async def _answer(self, question: Question) -> Made:
        answerer = self.vqa_model
        assert answerer is not None
        answer = await asyncio.get_running_loop().run_in_executor(
            self._executor,
            answerer.answer,
            question.image,
            question.question,
            question.max_tokens,
        )
        return Made(answer=answer)

    def _generate(
        self, works: Sequence[Work], on_step: ProgressFn, should_stop: StopFn, nested: bool = False
    ) -> list[Served]:
        """Engine thread: the requests as the engine's inputs, its pictures screened and
        encoded. ``nested``: a call run at another's step boundary, which takes no
        priority work itself."""
        engine = self.engine
        assert engine is not None
        generations = members(works, Generation)
        # Previews first: a step's preview leaves before the call pauses for priority work.
        first = generations[0].request
        hooks = self._preview_hooks(generations, (first.width, first.height))
        if self.breaks_steps and not nested:
            hooks.append(self.step_break.hook)
        made = engine.generate(
            [g.request.text_to_image() for g in generations], on_step, should_stop, hooks
        )
        return self._screened(generations, made)

    def _preview_hooks(self, works: Sequence[Work], size: tuple[int, int]) -> list[StepHook]:
        """The call's preview hook, when a member asked for previews: one row per image,
        each handed to its work's loop; ``size`` is the call's (width, height)."""
        if self.preview_decoder is None or all(w.preview is None for w in works):
            return []
        rows: list[tuple[PreviewFn, int] | None] = []
        for work in works:
            sink = _on_loop(work)
            rows += [None if sink is None else (sink, i) for i in range(work.units)]
        hook = PreviewHook(self.preview_decoder, self.preview_every, rows, *size)
        total = works[0].steps

        def at_step_end(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> None:
            hook(step + 1, total, tensors)

        return [at_step_end]

    @property
    def breaks_steps(self) -> bool:
        """Whether running generations take priority work at their step boundaries: not
        with a step cache, whose per-call state a nested call would overwrite."""
        engine = self.engine
        return (
            self.priority_at_step and engine is not None and engine.speed.step_cache.kind == "off"
        )

    async def run_at_step(self, works: Sequence[Work]) -> list[Served]:
        """Generations served at the running call's next step boundary, that call paused
        (``flux_server.execution.step_priority``); one result per work, as
        :meth:`run_batch`. Raises NotTaken when no running call took them (run them as
        the next batch then)."""
        engine = self.engine
        if engine is None or not self.breaks_steps:
            raise NotTaken()
        if not all(w.kind == "generate" for w in works):
            raise NotTaken()
        for work in works:
            if work.on_start is not None:
                await work.on_start()
        cancellation = BatchCancellation([w.token for w in works])

        def progress(step: int, total: int) -> None:
            for work in works:
                if work.progress is not None and work.loop is not None:
                    work.loop.call_soon_threadsafe(work.progress, step, total)

        def nested() -> list[Served]:
            with engine.adapters_kept():
                try:
                    return self._generate(works, progress, cancellation.should_stop, nested=True)
                except GenerationInterrupted:
                    return [Made() for _ in works]

        made = await asyncio.wrap_future(self.step_break.offer(nested))
        self.metrics.images_generated.inc(sum(len(m.images) for m in made if isinstance(m, Made)))
        return made

    def _edit(
        self, works: Sequence[Work], on_step: ProgressFn, should_stop: StopFn
    ) -> list[Served]:
        """Engine thread: the edits in one pipeline call, their images screened and
        encoded."""
        editor = self.editor
        assert editor is not None
        edits = members(works, Edit)
        hooks = self._preview_hooks(edits, edits[0].job.pipeline_size)
        results = editor.run_batch([e.job for e in edits], on_step, should_stop, hooks)
        made = [
            [Picture(image, seed) for image, seed in zip(r.images, r.seeds, strict=True)]
            for r in results
        ]
        return self._screened(works, made)

    def _screened(self, works: Sequence[Work], made: Sequence[Sequence[Picture]]) -> list[Served]:
        """Engine thread: each work's pictures encoded, or, when the image safety model
        flags one of them, the work's refusal (its pictures are dropped unencoded). All
        the batch's pictures go through one classifier call."""
        classifier = self.image_safety
        if classifier is None:
            return [_encoded(p, w.output_format) for w, p in zip(works, made, strict=True)]
        started = time.perf_counter()
        flags = iter(classifier.flag([p.image for pictures in made for p in pictures]))
        self.metrics.image_safety_duration.observe(time.perf_counter() - started)
        served: list[Served] = []
        for work, pictures in zip(works, made, strict=True):
            flagged = [f for f in (next(flags) for _ in pictures) if f is not None]
            if not flagged:
                served.append(_encoded(pictures, work.output_format))
                continue
            self.metrics.image_safety_flagged.inc(len(flagged))
            worst = max(flagged, key=lambda flag: flag.score)
            log.warning(
                "generated image refused",
                extra={"request_id": work.request_id, "reason": "image_classifier",
                       "matched": str(worst), "flagged": len(flagged)},
            )  # fmt: skip
            served.append(image_refused(str(worst)))
        return served

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._aux_executor.shutdown(wait=False, cancel_futures=True)


def _on_loop(work: Work) -> PreviewFn | None:
    """The work's preview callback, called from the engine thread on its loop."""
    preview, loop = work.preview, work.loop
    if preview is None or loop is None:
        return None

    def hand_over(image: PreviewImage) -> None:
        loop.call_soon_threadsafe(preview, image)

    return hand_over


def _adapter_specs(s: ServerSettings) -> list[Any]:
    """The ``--lora`` adapters with URLs downloaded and ``--lora-sha256`` digests checked
    (``LoraLoadError`` names the adapter that is refused)."""
    from flux_server.execution import lora, lora_source

    specs = lora.parse_lora_flags(s.lora)
    return lora_source.resolve(specs, lora_source.parse_sha256_flags(s.lora_sha256, specs))


def _encoded(pictures: Sequence[Picture], output_format: str) -> Made:
    return Made([GeneratedImage.encoded(p.image, output_format, p.seed) for p in pictures])


def describe_failure(exc: BaseException, work: Work) -> str:
    """What the caller is told when the pipeline failed for its request: what to try on
    an out-of-memory, else the error's type only (details stay in the server's log)."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        size, count = work.describe()
        return (
            f"the accelerator ran out of memory for this request ({size}, "
            f"{count} image(s)); try a smaller size or fewer images"
        )
    return f"generation failed ({type(exc).__name__}); the request id is in the server's logs"
