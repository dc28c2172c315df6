"""Priority at the step: work offered while a pipeline call runs is served at that
call's next denoising step boundary, the running call paused meanwhile.

How: the running call's step hook (:meth:`StepBreak.hook`, one link of the
``callback_on_step_end`` chain) runs the offered work right there, on the engine thread,
as a nested pipeline call, then returns and the paused call takes its next step. The
paused call's latents are locals of its own loop, untouched; what the pipeline keeps on
itself (the scheduler's step index and sigmas, the guidance scale, the attention kwargs,
the current timestep) is saved before the nested call and put back after it
(:func:`paused`), so the paused call's images are exactly what they would have been.

The other way, adding the priority request's rows to the running call at their own
timestep (the FLUX transformer takes one per sample), is not done: diffusers' loop steps
one scheduler over one sigma index for the whole batch, so it would mean writing our own
denoising loop (and re-slicing every batch-sized conditioning tensor each step) instead of
wrapping the pipeline; see docs/ARCHITECTURE.md for the measured cost of pausing.

Work offered when no call is running, or that the running call ended before taking, is
answered :class:`NotTaken`: its caller runs it as the next batch, as it would have anyway.
A step cache (``--step-cache``) keeps per-call state on the transformer that a nested
call would overwrite, so the runner does not open a break with one.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

log = logging.getLogger(__name__)

# What FluxPipeline.__call__ keeps on the pipeline object while it runs.
_CALL_STATE = (
    "_guidance_scale",
    "_joint_attention_kwargs",
    "_current_timestep",
    "_interrupt",
    "_num_timesteps",
)
_MISSING = object()


class NotTaken(Exception):
    """No running call took the offered work at a step boundary."""


@contextlib.contextmanager
def paused(pipe: Any) -> Iterator[None]:
    """Run a nested call on ``pipe`` and give the running call its state back after it:
    the nested call steps a copy of the scheduler, and the call's attributes return."""
    scheduler = pipe.scheduler
    saved = {name: getattr(pipe, name, _MISSING) for name in _CALL_STATE}
    pipe.scheduler = copy.deepcopy(scheduler)
    try:
        yield
    finally:
        pipe.scheduler = scheduler
        for name, value in saved.items():
            if value is not _MISSING:
                setattr(pipe, name, value)


class StepBreak:
    """Work waiting for the running call's next step boundary (thread-safe: offered from
    the event loop, taken on the engine thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open = 0  # calls running that take work at their boundaries
        self._waiting: list[tuple[Callable[[], Any], Future[Any]]] = []
        self.served = 0  # offers run at a boundary (for logs and tests)

    def offer(self, work: Callable[[], Any]) -> Future[Any]:
        """``work``'s result once a step boundary ran it; ``NotTaken`` at once when no
        call is running, or later when the running call ended first."""
        future: Future[Any] = Future()
        with self._lock:
            if self._open:
                self._waiting.append((work, future))
                return future
        future.set_exception(NotTaken())
        return future

    @property
    def pending(self) -> bool:
        return bool(self._waiting)

    @contextlib.contextmanager
    def open(self) -> Iterator[None]:
        """Around a pipeline call (engine thread): boundaries take work while it runs;
        what is left when it ends is answered NotTaken."""
        with self._lock:
            self._open += 1
        try:
            yield
        finally:
            with self._lock:
                self._open -= 1
                left, self._waiting = (self._waiting, []) if not self._open else ([], self._waiting)
            for _, future in left:
                future.set_exception(NotTaken())

    def hook(self, pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> None:
        """The step hook: run what waits, the running call paused (engine thread)."""
        if not self._waiting:  # read without the lock: a miss waits one step
            return
        with self._lock:
            taken, self._waiting = self._waiting, []
        for work, future in taken:
            if not future.set_running_or_notify_cancel():
                continue
            log.info("priority work at a step boundary", extra={"paused_at_step": step + 1})
            try:
                with paused(pipe):
                    result = work()
            except BaseException as exc:  # the offer's own failure, not the paused call's
                future.set_exception(exc)
            else:
                future.set_result(result)
            self.served += 1
