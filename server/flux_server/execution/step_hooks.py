"""diffusers' ``callback_on_step_end`` as a chain: each feature that acts at a denoising
step boundary (progress and cancel, priority work, previews) is one small hook, and the
pipeline gets one callback that calls them in order.

A hook has the callback's signature, ``(pipe, step, timestep, tensors)``; it returns the
tensors dict it was given, or one with replacements (the next hook sees those), or None
for "unchanged". A hook may raise to end the call (``GenerationInterrupted``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from flux_server.execution.cancellation import GenerationInterrupted
from flux_server.execution.inputs import ProgressFn, StopFn

StepHook = Callable[[Any, int, Any, dict[str, Any]], "dict[str, Any] | None"]


def chain(hooks: Sequence[StepHook | None]) -> Callable[..., dict[str, Any]] | None:
    """One ``callback_on_step_end`` calling ``hooks`` in order (None entries skipped);
    None when there is nothing to call, so the pipeline runs without a callback."""
    active = [hook for hook in hooks if hook is not None]
    if not active:
        return None

    def on_step_end(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict:
        for hook in active:
            replaced = hook(pipe, step, timestep, tensors)
            if replaced is not None:
                tensors = replaced
        return tensors

    return on_step_end


def progress_and_stop(
    total: int, progress: ProgressFn | None, should_stop: StopFn | None
) -> StepHook | None:
    """The hook that reports each finished step to ``progress`` and ends the call with
    :class:`GenerationInterrupted` when ``should_stop()`` turns true; None when neither
    is given. ``total`` is the number of denoising steps the call runs.

    It raises rather than set diffusers' ``_interrupt``, which would still run the
    remaining loop and decode latents nobody wants. After the last step it never
    stops: the images are made by then."""
    if progress is None and should_stop is None:
        return None

    def hook(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> None:
        done = step + 1
        if progress is not None:
            progress(done, total)
        if should_stop is not None and done < total and should_stop():
            raise GenerationInterrupted(done, total)

    return hook
