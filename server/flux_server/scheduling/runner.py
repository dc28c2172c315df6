"""What runs on the accelerator: the loaded models, the one thread that calls them, and
a batch of queued work turned into results.

Generations, edits and questions share one queue (one accelerator), so they share its
backpressure, lane and deadlines; :class:`Work` is what waits in it. Torch calls never
overlap: every model call goes through the single engine thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

from flux_server.execution.cancellation import (
    BatchCancellation,
    CancelToken,
    GenerationInterrupted,
)
from flux_server.execution.edit_job import EditJob, batch_key
from flux_server.execution.engine import Engine, choose_device
from flux_server.execution.inputs import InputRejected, Picture, ProgressFn, StopFn
from flux_server.execution.protocols import ImageEditor, QuestionAnswerer
from flux_server.execution.step_priority import NotTaken, StepBreak
from flux_server.metrics import Metrics
from flux_server.requests.edits import request_error
from flux_server.requests.params import ResolvedRequest
from flux_server.requests.results import GeneratedImage
from flux_server.settings import ServerSettings

if TYPE_CHECKING:
    from PIL import Image

_T = TypeVar("_T")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Question:
    image: Image.Image
    question: str
    max_tokens: int


@dataclass(eq=False)
class Work:
    """One request in the scheduler: a generation, an edit or a question."""

    kind: Literal["generate", "edit", "vqa"]
    job: ResolvedRequest | EditJob | Question
    output_format: str
    request_id: str
    progress: ProgressFn | None = None
    loop: asyncio.AbstractEventLoop | None = None
    # An async job's: cancelled by its id (stops its pipeline call once every member of
    # the call is cancelled), and told when its batch starts.
    token: CancelToken | None = None
    job_id: str | None = None
    on_start: Callable[[], Awaitable[None]] | None = None

    def key(self) -> tuple[Any, ...]:
        """Work with equal keys may run in one pipeline call."""
        if isinstance(self.job, ResolvedRequest):
            return ("generate", *self.job.batch_key())
        if isinstance(self.job, Question):
            return ("vqa", id(self))  # answered one at a time
        return ("edit", *batch_key(self.job))

    @property
    def units(self) -> int:
        return 1 if isinstance(self.job, Question) else int(self.job.num_images)


class Runner:
    """The loaded models and the thread that runs them. ``load()`` fills them in."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.engine: Engine | None = None
        self.editor: ImageEditor | None = None
        self.vqa_model: QuestionAnswerer | None = None
        self.adapter_defaults: dict[str, float] = {}  # loaded LoRA adapters: default scales
        # How many adapters one request may combine: one with a compiled transformer's
        # hot-swap slot, any number otherwise.
        self.adapters_per_request: int | None = None
        # A digest of each adapter's weights: part of the cache key, so new weights under
        # an old name never serve images made with the old ones (Redis outlives pods).
        self.adapter_versions: dict[str, str] = {}
        # The denoising step the running call last finished (written by the engine
        # thread, read on the loop): how far a cancelled call got after its cancel.
        self.step = 0
        # Priority at the step (--priority-at-step): generations offered while a call
        # runs are served at its next step boundary, the call paused.
        self.priority_at_step = True
        self.step_break = StepBreak()
        # One thread owns the accelerator: torch calls never overlap.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        # Decoding uploads and a safety classifier run beside it, off the event loop.
        self._aux_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aux")

    async def load(self, settings: ServerSettings) -> Engine:
        """The pipeline, then adapters, editing and VQA, then the warm-up (engine thread)."""
        loop = asyncio.get_running_loop()
        s = settings
        device = choose_device(s.device)
        speed = s.speed_options(device)
        engine = await loop.run_in_executor(
            self._executor,
            lambda: Engine.load(
                s.model, s.model_revision, device, s.dtype, speed, with_adapters=bool(s.lora)
            ),
        )
        self.engine = engine
        await loop.run_in_executor(self._executor, self._load_extras, s)
        if s.warmup:
            await loop.run_in_executor(self._executor, engine.warmup)
        return engine

    def _load_extras(self, s: ServerSettings) -> None:
        assert self.engine is not None
        if s.lora:
            from flux_server.execution import lora, lora_hotswap

            specs = lora.parse_lora_flags(s.lora)
            loaded = lora.load_adapters(self.engine.pipe, specs)
            self.engine.adapter_hook = lora.activate
            self.adapter_defaults = {name: spec.scale for name, spec in loaded.items()}
            self.adapter_versions = {name: lora.fingerprint(spec) for name, spec in loaded.items()}
            if lora_hotswap.attached(self.engine.pipe) is not None:
                self.adapters_per_request = 1
        if s.enable_editing or s.kontext_model:
            from flux_server.execution.editor import Editor

            self.editor = Editor(
                self.engine.pipe, s.kontext_model, set_adapters=self.engine.set_adapters
            )
        if s.vqa_model:
            from flux_server.execution.vqa import VqaModel

            self.vqa_model = VqaModel.load(s.vqa_model, self.engine.info.device)

    async def off_loop(self, func: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Run ``func`` in the auxiliary thread: decoding an upload at the pixel cap takes
        a few hundred milliseconds, long enough to stall every other request."""
        call = functools.partial(func, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._aux_executor, call)

    async def run_batch(self, works: Sequence[Work]) -> list[Any]:
        """One result per work, in order: a list of images per generation or edit, an
        answer per question (the batcher's ``RunBatch``)."""
        loop = asyncio.get_running_loop()
        for work in works:
            if work.on_start is not None:
                await work.on_start()
        listeners = [w for w in works if w.progress is not None and w.loop is not None]
        self.step = 0

        def progress(step: int, total: int) -> None:
            self.step = step
            for work in listeners:
                work.loop.call_soon_threadsafe(work.progress, step, total)  # type: ignore[union-attr,arg-type]

        on_step = progress
        first = works[0].job
        if isinstance(first, Question):
            answerer = self.vqa_model
            assert answerer is not None
            answer = await loop.run_in_executor(
                self._executor, answerer.answer, first.image, first.question, first.max_tokens
            )
            return [answer]
        cancellation = BatchCancellation([w.token for w in works])
        # One batch holds one kind of work (its key starts with the kind).
        run = self._generate if isinstance(first, ResolvedRequest) else self._edit
        # Open from here, not from the engine thread: priority work offered before the
        # call's first step waits for it instead of for the whole call.
        at_step = self.step_break.open() if run == self._generate and self.breaks_steps else None
        try:
            with at_step or contextlib.nullcontext():
                made = await loop.run_in_executor(
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
            return [[] for _ in works]
        except InputRejected as rejected:
            raise request_error(rejected) from None
        self.metrics.images_generated.inc(sum(len(images) for images in made))
        return made

    def _generate(
        self, works: Sequence[Work], on_step: ProgressFn, should_stop: StopFn, nested: bool = False
    ) -> list[list[GeneratedImage]]:
        """Engine thread: the requests as the engine's inputs, its pictures encoded."""
        engine = self.engine
        assert engine is not None
        requests = cast(list[ResolvedRequest], [w.job for w in works])
        jobs = [r.text_to_image() for r in requests]
        hooks = [self.step_break.hook] if self.breaks_steps and not nested else []
        made = engine.generate(jobs, on_step, should_stop, hooks)
        return [
            _encoded(pictures, w.output_format) for w, pictures in zip(works, made, strict=True)
        ]

    @property
    def breaks_steps(self) -> bool:
        """Whether running generations take priority work at their step boundaries: not
        with a step cache, whose per-call state a nested call would overwrite."""
        engine = self.engine
        return (
            self.priority_at_step and engine is not None and engine.speed.step_cache.kind == "off"
        )

    async def run_at_step(self, works: Sequence[Work]) -> list[Any]:
        """Generations served at the running call's next step boundary, that call paused
        (``flux_server.execution.step_priority``); one result per work, as
        :meth:`run_batch`. Raises NotTaken when no running call took them (run them as
        the next batch then)."""
        engine = self.engine
        if engine is None or not self.breaks_steps:
            raise NotTaken()
        if not all(isinstance(w.job, ResolvedRequest) for w in works):
            raise NotTaken()
        for work in works:
            if work.on_start is not None:
                await work.on_start()
        cancellation = BatchCancellation([w.token for w in works])

        def progress(step: int, total: int) -> None:
            for work in works:
                if work.progress is not None and work.loop is not None:
                    work.loop.call_soon_threadsafe(work.progress, step, total)

        def nested() -> list[list[GeneratedImage]]:
            with engine.adapters_kept():
                try:
                    return self._generate(works, progress, cancellation.should_stop, nested=True)
                except GenerationInterrupted:
                    return [[] for _ in works]

        made = await asyncio.wrap_future(self.step_break.offer(nested))
        self.metrics.images_generated.inc(sum(len(images) for images in made))
        return made

    def _edit(
        self, works: Sequence[Work], on_step: ProgressFn, should_stop: StopFn
    ) -> list[list[GeneratedImage]]:
        """Engine thread: the edits in one pipeline call, their images encoded."""
        editor = self.editor
        assert editor is not None
        results = editor.run_batch(
            cast(list[EditJob], [w.job for w in works]), on_step, should_stop
        )
        return [
            _encoded(
                [Picture(image, seed) for image, seed in zip(r.images, r.seeds, strict=True)],
                work.output_format,
            )
            for work, r in zip(works, results, strict=True)
        ]

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._aux_executor.shutdown(wait=False, cancel_futures=True)


def _encoded(pictures: Sequence[Picture], output_format: str) -> list[GeneratedImage]:
    return [GeneratedImage.encoded(p.image, output_format, p.seed) for p in pictures]


def describe_failure(exc: BaseException, work: Work) -> str:
    """What the caller is told when the pipeline failed for its request: what to try on
    an out-of-memory, else the error's type only (details stay in the server's log)."""
    job = work.job
    size = f"{getattr(job, 'width', '?')}x{getattr(job, 'height', '?')}"
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        count = getattr(job, "num_images", 1)
        return (
            f"the accelerator ran out of memory for this request ({size}, "
            f"{count} image(s)); try a smaller size or fewer images"
        )
    return f"generation failed ({type(exc).__name__}); the request id is in the server's logs"
